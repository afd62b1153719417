"""The report's matplotlib figures, drawn off-screen (Agg) from a run's epoch records."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from diffnas.search.diagnostics import cell_label
from diffnas.viz.rundata import ReportError, RunData
from diffnas.viz.spaceinfo import darts_state, edge_labels, edge_ops

DPI = 110
# Curves drawn when present, with the label a reader sees; trainings log test_*, searches and
# selections valid_* (the held-out half) and val_* (the mean loss of the alpha steps). Each
# split has one colour in every panel.
LOSS_KEYS = (
    ("train_loss", "train"),
    ("val_loss", "val (alpha steps)"),
    ("valid_loss", "valid"),
    ("test_loss", "test"),
)
ACC_KEYS = (("train_acc", "train"), ("valid_acc", "valid"), ("test_acc", "test"))
SPLIT_COLOURS = {
    "train": "tab:blue",
    "val (alpha steps)": "tab:purple",
    "valid": "tab:orange",
    "test": "tab:green",
}


def require_matplotlib() -> None:
    """Raise ReportError, saying how to install it, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(
            "the report needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install -e '.[report]')"
        ) from None


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas; no pyplot, so no global state or GUI backend."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> Path:
    """Write `fig` to `path` (PNG or SVG by its suffix); return the path."""
    fig.savefig(path, dpi=DPI)
    return path


def _series(run: RunData, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in run.epochs:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(int(r["epoch"]) + 1)
            ys.append(float(v))
    return xs, ys


def _style(n: int) -> dict[str, Any]:
    # With a handful of epochs, lines alone hide that there are only a few points.
    return {"marker": "o", "markersize": 3} if n <= 30 else {}


def curves(run: RunData, path: Path) -> Path | None:
    """Loss and accuracy per epoch (whichever of train/val/valid/test the run logged)."""
    panels = [
        (title, [(label, *_series(run, k)) for k, label in keys if run.has(k)])
        for title, keys in (("loss", LOSS_KEYS), ("accuracy (%)", ACC_KEYS))
    ]
    panels = [(t, s) for t, s in panels if s]
    if not panels:
        return None
    fig = new_figure(5.2 * len(panels), 3.4)
    for ax, (title, series) in zip(
        fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for label, xs, ys in series:
            ax.plot(xs, ys, label=label, color=SPLIT_COLOURS[label], **_style(len(xs)))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return save(fig, path)


def ground_truth(run: RunData, path: Path) -> Path | None:
    """Table accuracy (and rank) of each epoch's derived NB201 cell."""
    xs, acc = _series(run, "nb201_acc")
    if not xs:
        return None
    fig = new_figure(6.4, 3.4)
    ax = fig.subplots()
    ax.plot(xs, acc, color="tab:green", label="table accuracy", **_style(len(xs)))
    ax.set_xlabel("epoch")
    ax.set_ylabel("CIFAR-10 test accuracy (%)", color="tab:green")
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    rx, rank = _series(run, "nb201_rank")
    if rx:
        ax2 = ax.twinx()
        ax2.plot(rx, rank, color="tab:purple", linestyle="--", label="rank", **_style(len(rx)))
        from matplotlib.ticker import FuncFormatter

        # A log scale only pays when the ranks span decades; its ticks are unreadable otherwise.
        spread = max(rank) / max(min(rank), 1)
        if spread > 20:
            ax2.set_yscale("log")
        ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax2.invert_yaxis()  # rank 1 is best: better cells go up, like the accuracy
        scale = " (log)" if spread > 20 else ""
        ax2.set_ylabel(f"rank of 15,625{scale} (dashed)", color="tab:purple")
    ax.set_title("ground truth of the derived cell (NAS-Bench-201 table)")
    return save(fig, path)


def timing(run: RunData, path: Path) -> Path | None:
    """Wall-clock seconds per epoch."""
    xs, secs = _series(run, "epoch_time_s")
    if not xs:
        return None
    fig = new_figure(6.4, 2.8)
    ax = fig.subplots()
    ax.bar(xs, secs, color="tab:blue")
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds")
    ax.set_title(f"time per epoch (total {sum(secs):.1f} s, mean {sum(secs) / len(secs):.1f} s)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return save(fig, path)


def diagnostics(run: RunData, path: Path, threshold: float | None) -> Path | None:
    """Collapse diagnostics per epoch: parameter-free share of each derived cell, and the mean
    entropy of each cell type's edge weights."""
    records = [r for r in run.epochs if isinstance(r.get("param_free_ops"), dict)]
    if not records:
        return None
    xs = [int(r["epoch"]) + 1 for r in records]
    fig = new_figure(10.4, 3.4)
    share_ax, ent_ax = fig.subplots(1, 2)
    cells = list(records[-1]["param_free_ops"])
    for cell in cells:
        share = [
            r["param_free_ops"].get(cell, 0) / max(r.get("cell_ops", {}).get(cell, 0), 1)
            for r in records
        ]
        share_ax.plot(xs, share, label=cell, **_style(len(xs)))
    if threshold is not None:
        share_ax.axhline(threshold, color="tab:red", linestyle="--", label="search.collapse_warn")
    for x, r in zip(xs, records, strict=True):
        if r.get("collapse_warning"):
            share_ax.axvspan(x - 0.5, x + 0.5, color="tab:red", alpha=0.12, linewidth=0)
    share_ax.set_ylim(-0.05, 1.05)
    share_ax.set_title("parameter-free share of the derived cell")
    share_ax.set_xlabel("epoch (red: collapse warning)")
    share_ax.legend(fontsize=8)
    share_ax.grid(alpha=0.3)
    share_ax.xaxis.get_major_locator().set_params(integer=True)
    widths = _op_counts(run)
    top = max([math.log(w) for w in widths.values() if w > 0], default=0.0)
    for cell in records[-1].get("edge_entropy", {}):
        ex, mean = [], []
        for x, r in zip(xs, records, strict=True):
            values = r.get("edge_entropy", {}).get(cell)
            if values:
                ex.append(x)
                mean.append(sum(values) / len(values))
                top = max(top, mean[-1])
        line = ent_ax.plot(ex, mean, label=cell, **_style(len(ex)))[0]
        if cell in widths:
            ent_ax.axhline(math.log(widths[cell]), color=line.get_color(), linestyle=":", lw=1)
    ent_ax.set_title("mean edge-weight entropy (dotted: uniform)")
    ent_ax.set_xlabel("epoch")
    ent_ax.set_ylabel("nats")
    ent_ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)  # the uniform line must stay visible
    ent_ax.legend(fontsize=8)
    ent_ax.grid(alpha=0.3)
    ent_ax.xaxis.get_major_locator().set_params(integer=True)
    return save(fig, path)


def _op_counts(run: RunData) -> dict[str, int]:
    if not run.history:
        return {}
    weights = run.history[-1].get("genotype", {}).get("weights", {})
    return {k: len(v[0]) for k, v in weights.items() if v and v[0]}


def weight_history(run: RunData) -> dict[str, list[list[list[float]]]]:
    """Per cell type, the edge weights of every logged epoch: [epoch][edge][op]."""
    out: dict[str, list] = {}
    for record in run.history:
        weights = (record.get("genotype") or {}).get("weights")
        if not isinstance(weights, dict):
            continue
        for cell, rows in weights.items():
            out.setdefault(cell, []).append(rows)
    # Only epochs of the shape of the newest (a run whose space changed is not worth drawing).
    return {cell: [w for w in hist if _shape(w) == _shape(hist[-1])] for cell, hist in out.items()}


def _shape(rows: list[list[float]]) -> tuple[int, ...]:
    return (len(rows), *(len(r) for r in rows))


def chosen_ops(genotype: Any, cell: str, n_edges: int) -> dict[int, str]:
    """Edge index -> op of the derived genotype, for the edges it keeps."""
    from diffnas.spaces.genotypes import NB201Genotype, PairRNNGenotype, RNNGenotype

    if genotype is None:
        return {}
    if isinstance(genotype, NB201Genotype):  # every edge, in weight-row order
        return dict(enumerate(genotype.ops)) if cell == "cell" else {}
    if isinstance(genotype, PairRNNGenotype):  # one row per node
        return dict(enumerate(genotype.ops)) if cell == "rnn" else {}
    if isinstance(genotype, RNNGenotype):  # node i's edge from j: row i(i-1)/2 + j
        from diffnas.spaces.darts_rnn import edge_offset

        rec = genotype.recurrent
        return {edge_offset(i) + j: op for i, (op, j) in enumerate(rec, 1)} if cell == "rnn" else {}
    from diffnas.spaces.darts_cnn import edge_list
    from diffnas.viz.spaceinfo import darts_steps

    gene = getattr(genotype, cell, None)
    steps = darts_steps(n_edges)
    if gene is None or steps is None:
        return {}
    edges = edge_list(steps)
    out = {}
    for k, (op, inp) in enumerate(gene):
        if (inp, k // 2 + 2) in edges:
            out[edges.index((inp, k // 2 + 2))] = op
    return out


def _target(label: str) -> str:
    return label.split("\u2192")[-1]


def alpha_heatmaps(run: RunData, cell: str, path: Path) -> Path | None:
    """One heatmap per edge of `cell`: its ops' weights (rows) over the epochs (columns); edges
    grouped by their target node, one row of panels per node."""
    hist = weight_history(run).get(cell)
    if not hist:
        return None
    space = run.space_name()
    n_edges, n_ops = len(hist[-1]), len(hist[-1][0])
    labels = edge_labels(space, n_edges)
    ops = edge_ops(space, cell, n_edges, n_ops)
    chosen = chosen_ops(run.genotype, cell, n_edges)
    groups: dict[str, list[int]] = {}
    for e, label in enumerate(labels):
        groups.setdefault(_target(label), []).append(e)
    ncols = max(len(g) for g in groups.values())
    nrows = len(groups)
    epochs = [int(r.get("epoch", i)) + 1 for i, r in enumerate(run.history)][-len(hist) :]
    values = [v for w in hist for row in w for v in row]
    vmin, vmax = min(values), max(values)
    same_ops = all(o == ops[0] for o in ops)
    fig = new_figure(2.3 * ncols + 1.6, 0.22 * n_ops * nrows + 0.75 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for row, (_, edges) in enumerate(groups.items()):
        for col in range(ncols):
            ax = axes[row][col]
            if col >= len(edges):
                ax.axis("off")
                continue
            e = edges[col]
            grid = [[hist[t][e][o] for t in range(len(hist))] for o in range(n_ops)]
            image = ax.imshow(
                grid,
                aspect="auto",
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
                extent=(epochs[0] - 0.5, epochs[-1] + 0.5, n_ops - 0.5, -0.5),
            )
            if e in chosen:
                ax.set_title(f"{labels[e]}: {chosen[e]}", fontsize=8, fontweight="bold")
                if chosen[e] in ops[e]:
                    o = ops[e].index(chosen[e])
                    ax.plot(
                        [epochs[-1] + 0.5],
                        [o],
                        marker="<",
                        color="red",
                        markersize=6,
                        clip_on=False,
                    )
            else:
                ax.set_title(labels[e], fontsize=8, color="0.45")
            ax.set_yticks(range(n_ops))
            ax.set_yticklabels(ops[e] if (col == 0 or not same_ops) else [], fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
            ax.xaxis.get_major_locator().set_params(integer=True)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="edge weight")
    kept = "bold titles / red marks: the derived cell's edges and ops"
    fig.suptitle(f"{cell_label(cell)}: edge weights per epoch ({kept})", fontsize=9)
    return save(fig, path)


def decision_scores(decisions: list[dict[str, Any]], path: Path) -> Path | None:
    """Per op decision, each candidate's validation accuracy with it removed; the chosen one
    (the most missed) marked."""
    ops = [d for d in decisions if d.get("decision") == "op" and d.get("candidates")]
    if not ops:
        return None
    ncols = min(len(ops), 4)
    nrows = math.ceil(len(ops) / ncols)
    fig = new_figure(3.2 * ncols, 2.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, d in enumerate(ops):
        ax = axes[i // ncols][i % ncols]
        names = [c.get("op", "?") for c in d["candidates"]]
        accs = [float(c.get("acc", float("nan"))) for c in d["candidates"]]
        colors = ["tab:red" if n == d.get("chosen") else "tab:gray" for n in names]
        ax.barh(range(len(names)), accs, color=colors)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=6)
        ax.invert_yaxis()
        finite = [a for a in accs if math.isfinite(a)]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_xlim(max(0.0, lo - (hi - lo) - 1), hi + (hi - lo) * 0.2 + 1)
        edge = f"{_state(d, 'from')}\u2192{_state(d, 'to')}"
        ax.set_title(f"step {int(d.get('step', i)) + 1} {d.get('cell', '')}: {edge}", fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    for j in range(len(ops), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    fig.suptitle("valid accuracy (%) without each op; red: chosen (the most missed)", fontsize=9)
    return save(fig, path)


def _state(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, int):
        return "?"
    return str(v) if d.get("cell") == "cell" else darts_state(v)
