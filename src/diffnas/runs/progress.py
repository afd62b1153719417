"""A dependency-free progress bar for long loops: loss, accuracy and speed on one line.

The bar redraws one terminal line; on a stream that is not a terminal (a log file, a pipe) it
draws nothing, and the per-epoch lines the runs print are the whole progress record."""

from __future__ import annotations

import sys
import time


class Progress:
    """Wraps an iterable; `update(**metrics)` sets the numbers shown after the bar."""

    def __init__(
        self,
        iterable,
        total: int,
        desc: str = "",
        enabled: bool = True,
        unit: str = "it",
        stream=None,
        min_interval: float = 0.5,
    ):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and _is_terminal(self.stream)
        self.min_interval = min_interval
        self.metrics: dict[str, float] = {}
        self.n, self.start, self._last = 0, time.perf_counter(), 0.0

    def update(self, **metrics: float) -> None:
        """Record the latest metrics to display."""
        self.metrics.update(metrics)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.perf_counter()
            if self.enabled and (now - self._last >= self.min_interval or self.n == self.total):
                self._last = now
                self._draw(now)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        frac = self.n / self.total if self.total else 1.0
        filled = int(20 * frac)
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        shown = " ".join(f"{k}={v:.4g}" for k, v in self.metrics.items())
        self.stream.write(
            f"\r{self.desc} [{'#' * filled}{'.' * (20 - filled)}] {self.n}/{self.total} "
            f"{shown} {rate:.2f}{self.unit}/s eta {eta:.0f}s\x1b[K"
        )
        self.stream.flush()


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
