"""The HTML report of a run directory: one self-contained page (inline CSS, no scripts, nothing
fetched from the network) with its PNG figures beside it, referenced by relative path."""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from diffnas import __version__
from diffnas.runs.config import SearchConfig
from diffnas.runs.rundir import file_in_the_way
from diffnas.search.diagnostics import cell_label
from diffnas.viz import cells, figures
from diffnas.viz.rundata import ReportError, RunData, read_run
from diffnas.viz.spaceinfo import darts_state

INDEX_FILE = "index.html"
REPORT_DIR = "report"

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin: 24px 0 4px; font-size: 26px; }
h2 { margin-top: 36px; border-bottom: 2px solid #ddd; padding-bottom: 4px; font-size: 20px; }
h3 { margin: 20px 0 8px; font-size: 16px; }
.meta { color: #666; margin: 0 0 12px; }
nav { background: #f4f6f8; padding: 8px 12px; border-radius: 6px; font-size: 14px; }
nav a { margin-right: 14px; color: #1f4e9a; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d8dde3; border-radius: 8px; padding: 10px 16px; min-width: 150px;
        background: #fbfcfd; }
.card .label { font-size: 12px; color: #667; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 600; }
.card .sub { font-size: 12px; color: #667; }
.warning { border: 2px solid #c62828; background: #fdecea; color: #7f1d1d; padding: 12px 16px;
           border-radius: 6px; margin: 16px 0; }
.warning strong { color: #b71c1c; }
.note { border-left: 4px solid #f0ad4e; background: #fff8e6; padding: 8px 12px; margin: 12px 0;
        font-size: 14px; }
code.genotype { display: block; white-space: pre-wrap; word-break: break-all; background: #f4f6f8;
                padding: 8px 10px; border-radius: 4px; font-size: 13px; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
.cells { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.chosen { font-weight: 700; color: #b71c1c; }
pre.config { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 10px; font-size: 12px;
             max-height: 480px; overflow: auto; }
.legend { font-size: 13px; color: #555; }
.legend span { display: inline-block; width: 22px; height: 3px; vertical-align: middle;
               margin: 0 4px 0 12px; }
"""

KIND_TITLES = {"search": "search", "train": "final training", "select": "architecture selection"}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _card(label: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="sub">{_e(sub)}</div>' if sub else ""
    return (
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div>{sub_html}</div>'
    )


def _img(path: Path | None, out: Path, alt: str, caption: str = "") -> str:
    if path is None:
        return ""
    rel = path.relative_to(out).as_posix()
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_e(rel)}" alt="{_e(alt)}">{cap}</figure>'


def _epoch_time(run: RunData) -> float:
    return sum(
        float(r["epoch_time_s"])
        for r in run.epochs
        if isinstance(r.get("epoch_time_s"), int | float)
    )


def _best(run: RunData, key: str) -> tuple[float, int] | None:
    best = None
    for r in run.epochs:
        v = r.get(key)
        if isinstance(v, int | float) and (best is None or v > best[0]):
            best = (float(v), int(r["epoch"]) + 1)
    return best


def _epochs_sub(run: RunData, section: str) -> str:
    planned = run.section(section).get("epochs")
    done = len(run.epochs)
    if isinstance(planned, int) and done < planned:
        return f"of {planned} planned: unfinished"
    return ""


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def table_card(genotype: Any, label: str) -> str:
    """A card with the ground truth of an NB201 cell (CIFAR-10 table accuracy and rank), or ""
    when the genotype is not an NB201 cell or the table is not installed."""
    from diffnas.bench import get_table, is_available
    from diffnas.spaces.genotypes import NB201Genotype

    if not isinstance(genotype, NB201Genotype) or not is_available():
        return ""
    table = get_table()
    return _card(
        label,
        f"{_num(table.accuracy(genotype))} %",
        f"CIFAR-10 table, rank {table.rank(genotype):,} of {len(table):,}",
    )


def headline(run: RunData) -> str:
    """The summary cards: the metric that matters for the kind of run first."""
    cards = []
    if run.kind == "train":
        acc = (run.result or {}).get("test_acc", run.final("test_acc"))
        best = _best(run, "test_acc")
        cards.append(
            _card(
                "test accuracy",
                f"{_num(acc)} %",
                f"best {_num(best[0])} % at epoch {best[1]}" if best else "",
            )
        )
        params = (run.result or {}).get("params")
        if isinstance(params, int | float):
            macs = (run.result or {}).get("macs")
            cards.append(
                _card(
                    "parameters",
                    f"{params / 1e6:.3f} M",
                    f"{macs / 1e6:.1f} M multiply-adds" if macs else "",
                )
            )
        cards.append(_card("epochs", str(len(run.epochs)), _epochs_sub(run, "train")))
    elif run.kind == "select":
        method = (run.result or {}).get("method") or run.section("select").get("method", "?")
        cards.append(_card("selection", str(method)))
        if run.epochs:
            cards.append(
                _card(
                    "supernet valid accuracy",
                    f"{_num(run.final('valid_acc'))} %",
                    f"after {len(run.epochs)} tuning epochs",
                )
            )
        if run.decisions:
            spent = sum(float(d.get("time_s", 0.0)) for d in run.decisions)
            cards.append(_card("decisions", str(len(run.decisions)), f"{_duration(spent)}"))
        cards.append(table_card(run.genotype, "table accuracy of the selected cell"))
    else:
        if not run.has("nb201_acc"):  # searches run without the ground-truth hook
            cards.append(table_card(run.genotype, "table accuracy of the cell"))
        if run.has("nb201_acc"):
            rank = run.final("nb201_rank")
            cards.append(
                _card(
                    "table accuracy of the cell",
                    f"{_num(run.final('nb201_acc'))} %",
                    f"rank {rank:,} of 15,625" if isinstance(rank, int) else "",
                )
            )
        if run.has("valid_acc"):
            cards.append(
                _card(
                    "supernet valid accuracy",
                    f"{_num(run.final('valid_acc'))} %",
                    f"train {_num(run.final('train_acc'))} %",
                )
            )
        cards.append(_card("epochs", str(len(run.epochs)), _epochs_sub(run, "search")))
    if run.epochs and run.has("epoch_time_s"):
        cards.append(_card("time", _duration(_epoch_time(run)), "sum of epoch times"))
    space = run.space_name()
    dataset = run.section("data").get("dataset")
    if space or dataset:
        cards.append(_card("space / data", f"{space or '?'}", str(dataset or "")))
    return f'<div class="cards">{"".join(cards)}</div>'


def final_cell_box(run: RunData) -> str:
    """A red warning box when the last epoch's derived cell has no path from input to output,
    or its edge weights are still near uniform (`search.uniform_warn`)."""
    last = run.epochs[-1]
    parts = [
        f"the derived {cell_label(k)} has no path of non-<code>none</code> ops from its input "
        "to its output (it computes a constant)"
        for k in last.get("disconnected") or []
    ]
    threshold = run.section("search").get("uniform_warn", SearchConfig().uniform_warn)
    ratios = last.get("entropy_ratio") or {}
    flat = {k: r for k, r in ratios.items() if r > threshold}
    if flat:
        shares = ", ".join(f"{cell_label(k)} at {r:.3%}" for k, r in flat.items())
        parts.append(
            f"the edge weights are still near uniform (mean edge entropy of the {_e(shares)} "
            f"of the uniform maximum, above search.uniform_warn = {threshold}): the cell rests "
            "on tiny differences"
        )
    if not parts:
        return ""
    return (
        '<div class="warning" id="final-cell-warning"><strong>Derived cell warning:</strong> '
        f"{'; '.join(parts)}.</div>"
    )


def collapse_box(run: RunData) -> str:
    """A red warning box when the final derived cell is flagged as collapsing (parameter-free
    ops beyond `search.collapse_warn`); a note when only earlier epochs were."""
    flagged = [r for r in run.epochs if r.get("collapse_warning")]
    if not flagged:
        return ""
    threshold = run.section("search").get("collapse_warn")
    epochs = ", ".join(str(int(r["epoch"]) + 1) for r in flagged)
    last = run.epochs[-1]
    if not last.get("collapse_warning"):
        return (
            f'<div class="note">Earlier epochs ({_e(epochs)}) were flagged for parameter-free '
            "ops taking over the derived cell; the final cell is not.</div>"
        )
    parts = []
    for cell, n in (last.get("param_free_ops") or {}).items():
        total = (last.get("cell_ops") or {}).get(cell, 0)
        kinds = ", ".join(
            f"{op} x{c}" for op, c in (last.get("param_free_kinds") or {}).get(cell, {}).items()
        )
        parts.append(f"{cell}: {n} of {total} ops" + (f" ({kinds})" if kinds else ""))
    share = f" (more than {threshold:.0%}, search.collapse_warn)" if threshold is not None else ""
    return (
        '<div class="warning" id="collapse-warning"><strong>Collapse warning:</strong> '
        f"parameter-free ops (skip, pooling, none) fill the derived cell{_e(share)}: "
        f"{_e('; '.join(parts))}. Flagged at epoch(s) {_e(epochs)}. The search may be "
        "collapsing: consider fewer epochs, perturbation-based selection "
        "(<code>diffnas select RUN_DIR</code>) or a regulariser (reduction cells are not "
        "checked).</div>"
    )


def genotype_section(run: RunData, out: Path, prefix: str) -> str:
    """Cell diagrams of the run's genotype, and its text form."""
    if run.genotype is None:
        return '<p class="note">No genotype in this run directory yet.</p>'
    parts, renderers = [], set()
    for kind, graph in cells.cell_graphs(run.genotype):
        path, renderer = cells.draw_cell(graph, out / f"{prefix}cell_{kind}.png")
        renderers.add(renderer)
        parts.append(_img(path, out, f"{graph.title} diagram", graph.title))
    legend = (
        f'<p class="legend">edges:<span style="background:{cells.PARAM_COLOR}"></span>op with '
        f'weights<span style="background:{cells.FREE_COLOR}"></span>parameter-free op'
        f'<span style="background:{cells.NONE_COLOR}"></span><code>none</code> (no connection) '
        f"&middot; drawn with {' and '.join(sorted(renderers))}</p>"
    )
    return (
        f'<div class="cells">{"".join(parts)}</div>{legend}'
        f'<code class="genotype">{_e(run.genotype)}</code>'
        f'<p class="meta">from {_e(run.genotype_source)}</p>'
    )


def _state(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, int):
        return "?"
    return str(v) if d.get("cell") == "cell" else darts_state(v)


def decisions_table(decisions: list[dict[str, Any]]) -> str:
    """One row per decision: what was decided, every candidate's score, the choice, the time."""
    if not decisions:
        return ""
    rows = []
    for d in decisions:
        if d.get("decision") == "node":
            what = f"inputs of node {_state(d, 'node')}"
            rounds = []
            for r in d.get("rounds", []):
                cands = ", ".join(
                    f"{_state({**c, 'cell': d.get('cell')}, 'from')}: {_num(c.get('acc'), 1)}"
                    for c in r.get("candidates", [])
                )
                dropped = next(
                    (c for c in r.get("candidates", []) if c.get("edge") == r.get("dropped")), {}
                )
                drop = _state({**dropped, "cell": d.get("cell")}, "from")
                rounds.append(f"without {_e(cands)} &rarr; drop {_e(drop)}")
            candidates = "<br>".join(rounds)
            kept = ", ".join(
                _state({"from": s, "cell": d.get("cell")}, "from") for s in d.get("kept_from", [])
            )
            chosen = f"keeps {kept}"
        else:
            what = f"op of edge {_state(d, 'from')}&rarr;{_state(d, 'to')}"
            items = []
            for c in d.get("candidates", []):
                text = f"{_e(c.get('op'))} {_num(c.get('acc'), 1)} / {_num(c.get('loss'), 3)}"
                items.append(
                    f'<span class="chosen">{text}</span>'
                    if c.get("op") == d.get("chosen")
                    else text
                )
            candidates = ", ".join(items) or "(every op pruned)"
            chosen = str(d.get("chosen")) if d.get("chosen") is not None else "edge cut"
        rows.append(
            "<tr>"
            f'<td class="num">{int(d.get("step", 0)) + 1}</td>'
            f'<td class="num">{int(d.get("epoch", 0)) + 1}</td>'
            f"<td>{_e(d.get('cell', ''))}</td><td>{what}</td><td>{candidates}</td>"
            f'<td class="chosen">{_e(chosen)}</td>'
            f'<td class="num">{_num(d.get("time_s"), 2)}</td>'
            "</tr>"
        )
    criterion = decisions[0].get("criterion", "acc")
    return (
        '<table class="decisions"><thead><tr><th>step</th><th>tuning epoch</th><th>cell</th>'
        "<th>decided</th><th>candidates: valid acc % / loss with it removed"
        f" (criterion: {_e(criterion)})</th><th>chosen</th><th>time (s)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def timing_table(run: RunData) -> str:
    """Totals of the logged times."""
    rows = []
    if run.has("epoch_time_s"):
        total, n = _epoch_time(run), sum(1 for r in run.epochs if "epoch_time_s" in r)
        rows.append(("epochs", f"{n}", f"{_duration(total)} in all, {total / n:.2f} s each"))
    if run.decisions:
        spent = sum(float(d.get("time_s", 0.0)) for d in run.decisions)
        rows.append(("decisions", f"{len(run.decisions)}", f"{_duration(spent)} in all"))
    stamps = [r["time"] for r in run.epochs if isinstance(r.get("time"), int | float)]
    if len(stamps) >= 2:
        rows.append(("first to last epoch record", "", _duration(stamps[-1] - stamps[0])))
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(a)}</td><td class='num'>{_e(b)}</td><td>{_e(c)}</td></tr>" for a, b, c in rows
    )
    return f"<table><tbody>{body}</tbody></table>"


def _run_figures(run: RunData, out: Path, prefix: str) -> dict[str, str]:
    """The figure sections of one run (curves, ground truth, diagnostics, alphas, timing)."""
    f = {}
    f["curves"] = _img(
        figures.curves(run, out / f"{prefix}curves.png"),
        out,
        "loss and accuracy curves",
        "per epoch; valid = the held-out half of the "
        "training set, val (alpha steps) = mean loss of the architecture steps",
    )
    f["ground-truth"] = _img(
        figures.ground_truth(run, out / f"{prefix}ground_truth.png"),
        out,
        "ground-truth accuracy per epoch",
        "CIFAR-10 test accuracy of each epoch's derived cell in the table",
    )
    threshold = run.section("search").get("collapse_warn")
    f["diagnostics"] = _img(
        figures.diagnostics(run, out / f"{prefix}diagnostics.png", threshold),
        out,
        "collapse diagnostics",
        "parameter-free share of the derived cells (reduction cells are "
        "not checked for the warning) and how undecided the edge weights still are",
    )
    alphas = []
    for cell in figures.weight_history(run):
        alphas.append(
            _img(
                figures.alpha_heatmaps(run, cell, out / f"{prefix}alphas_{cell}.png"),
                out,
                f"{cell_label(cell)} edge weights per epoch",
            )
        )
    f["alphas"] = "".join(alphas)
    f["timing"] = _img(figures.timing(run, out / f"{prefix}timing.png"), out, "time per epoch")
    return f


def selection_block(sel: RunData, out: Path, prefix: str, level: int) -> str:
    """A selection's summary, genotype, decisions (table and chart) and tuning curves."""
    h = f"h{level}"
    parts = []
    if sel.kind == "select" and level > 2:
        parts.append(headline(sel))
    parts.append(f"<{h}>Selected genotype</{h}>" + genotype_section(sel, out, prefix))
    if sel.decisions:
        chart = figures.decision_scores(sel.decisions, out / f"{prefix}decisions.png")
        parts.append(
            f"<{h}>Decisions</{h}>"
            + decisions_table(sel.decisions)
            + _img(chart, out, "decision scores")
        )
    return "".join(parts)


def render(run: RunData, out: Path) -> str:
    """The report page of `run`, its figures written to `out`."""
    sections: list[tuple[str, str, str]] = []  # (id, title, html)
    figs = _run_figures(run, out, "")
    if run.kind == "select":
        sections.append(("genotype", "Selected genotype", genotype_section(run, out, "")))
        if run.decisions:
            chart = figures.decision_scores(run.decisions, out / "decisions.png")
            sections.append(
                (
                    "decisions",
                    "Selection decisions",
                    decisions_table(run.decisions) + _img(chart, out, "decision scores"),
                )
            )
    elif run.kind == "train":
        sections.append(("genotype", "Trained genotype", genotype_section(run, out, "")))
    else:
        rule = (
            "argmax op per edge"
            if run.space_name() == "nb201"
            else "per node the two inputs with the strongest non-none op, then that op"
        )
        intro = (
            f'<p class="meta">The cell the derivation rule ({_e(rule)}) reads off the final edge '
            "weights; a selection (below, where there is one) may choose differently.</p>"
        )
        sections.append(("genotype", "Derived genotype", intro + genotype_section(run, out, "")))
    if figs["curves"]:
        title = "Tuning curves" if run.kind == "select" else "Loss and accuracy"
        sections.append(("curves", title, figs["curves"]))
    if figs["ground-truth"]:
        sections.append(("ground-truth", "Ground truth (NAS-Bench-201)", figs["ground-truth"]))
    if figs["diagnostics"]:
        sections.append(("diagnostics", "Collapse diagnostics", figs["diagnostics"]))
    if figs["alphas"]:
        sections.append(("alphas", "Edge weights (alphas) per epoch", figs["alphas"]))
    for sel in run.selections:
        sel_id = f"selection-{sel.name}"
        body = selection_block(sel, out, f"{sel.name}_", 3)
        sel_figs = _run_figures(sel, out, f"{sel.name}_")
        if sel_figs["curves"]:
            body += "<h3>Tuning curves</h3>" + sel_figs["curves"]
        if sel_figs["alphas"]:
            body += "<h3>Edge weights during tuning</h3>" + sel_figs["alphas"]
        sel_timing = timing_table(sel) + sel_figs["timing"]
        if sel_timing:
            body += "<h3>Timing of the selection</h3>" + sel_timing
        sections.append((sel_id, f"Selection: {sel.name}", body))
    timing = timing_table(run) + figs["timing"]
    if timing:
        sections.append(("timing", "Timing", timing))
    if run.config_text is not None:
        sections.append(
            (
                "config",
                "Resolved config (config.toml)",
                f'<pre class="config">{_e(run.config_text)}</pre>',
            )
        )

    nav = " ".join(f'<a href="#{_e(i)}">{_e(t)}</a>' for i, t, _ in sections)
    notes = "".join(f'<div class="note">{_e(n)}</div>' for n in run.notes)
    for sel in run.selections:
        notes += "".join(f'<div class="note">{_e(sel.name)}: {_e(n)}</div>' for n in sel.notes)
    top_warning = collapse_box(run) + final_cell_box(run) if run.epochs else ""
    selected = "".join(
        table_card(sel.genotype, f"selected ({sel.name.removeprefix('select-')})")
        or _card(
            f"selected ({sel.name.removeprefix('select-')})",
            f"{_num(sel.final('valid_acc'))} %" if sel.epochs else "done",
            "supernet valid accuracy after tuning" if sel.epochs else "",
        )
        for sel in run.selections
    )
    body = "".join(f'<section id="{_e(i)}"><h2>{_e(t)}</h2>{h}</section>' for i, t, h in sections)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="diffnas {_e(__version__)} report">'
        f"<title>diffnas report: {_e(run.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>diffnas report: {_e(run.name)}</h1>"
        f'<p class="meta">{_e(KIND_TITLES[run.kind])} run in <code>{_e(run.path)}</code> '
        f"&middot; generated {_e(stamp)} by diffnas {_e(__version__)}</p>"
        f"{headline(run)}"
        + (f'<div class="cards">{selected}</div>' if selected else "")
        + f"{top_warning}{notes}<nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run_dir` to `out` (default `run_dir/report/`): index.html and its
    PNG figures; return the path of index.html."""
    figures.require_matplotlib()  # before anything is written
    run = read_run(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / REPORT_DIR
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ReportError(
            f"cannot write the report to {out}: {blocker} is a file; pick another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    page = render(run, out.resolve())
    index = out / INDEX_FILE
    index.write_text(page, encoding="utf-8")
    return index
