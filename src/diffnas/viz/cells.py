"""Diagrams of derived cells: graphviz `dot` when it is installed, matplotlib otherwise."""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffnas.viz.spaceinfo import DARTS_INPUTS, is_parameter_free

# Fill colours of the node roles, after the DARTS paper's figures.
ROLE_COLORS = {"input": "#b4eeb4", "node": "#add8e6", "output": "#eee8aa"}
PARAM_COLOR = "#1f4e9a"  # ops with weights
FREE_COLOR = "#8c8c8c"  # parameter-free ops: what a collapsing search fills the cell with
NONE_COLOR = "#c8c8c8"


@dataclass
class CellGraph:
    """A cell as a graph: nodes (id, label, role), edges (from, to, op or None, bend), and the
    node positions of the matplotlib drawing (graphviz lays the graph out itself)."""

    title: str
    nodes: list[tuple[str, str, str]] = field(default_factory=list)
    # bend: how far (data units, to the left of the edge's direction) its curve bows out;
    # at: where along it (0 to 1) its label sits.
    edges: list[tuple[str, str, str | None, float, float]] = field(default_factory=list)
    pos: dict[str, tuple[float, float]] = field(default_factory=dict)
    # The cell's ops without weights, drawn grey (None: the CNN spaces' skip, pools, none;
    # `cell_graphs` sets the genotype's own, `diagnostics.parameter_free`).
    free_ops: frozenset[str] | None = None


def cell_graphs(genotype: Any) -> list[tuple[str, CellGraph]]:
    """(cell type, graph) of every cell of a genotype: NB201's one cell, DARTS' normal and
    reduce cells."""
    from diffnas.search.diagnostics import parameter_free
    from diffnas.spaces.genotypes import NB201Genotype, PairRNNGenotype, RNNGenotype

    if genotype is None:
        return []
    if isinstance(genotype, NB201Genotype):
        graphs = [("cell", nb201_graph(genotype.ops))]
    elif isinstance(genotype, PairRNNGenotype):
        graphs = [("recurrent", pair_graph(genotype))]
    elif isinstance(genotype, RNNGenotype):
        graphs = [("recurrent", rnn_graph(genotype.recurrent, genotype.concat))]
    else:
        graphs = [
            (kind, darts_graph(getattr(genotype, kind), getattr(genotype, kind + "_concat"), kind))
            for kind in ("normal", "reduce")
        ]
    for _, g in graphs:
        g.free_ops = parameter_free(genotype)  # the space's own: no DARTS RNN op is
    return graphs


STEP = 2.4  # distance between neighbouring nodes in the matplotlib drawing (room for labels)


def nb201_graph(ops: tuple[str, ...]) -> CellGraph:
    """The NB201 cell: node 0 the input, node 3 the output, one edge per pair i < j."""
    from diffnas.spaces.genotypes import NB201Genotype

    g = CellGraph("NB201 cell")
    for n in range(4):
        role = "input" if n == 0 else "output" if n == 3 else "node"
        g.nodes.append((f"n{n}", str(n), role))
        g.pos[f"n{n}"] = (STEP * n, 0.0)
    # Neighbours straight; 0->2 above, 1->3 below, 0->3 highest: no two labels meet.
    bends = {1: 0.0, 2: 0.75, 3: 1.4}
    for (a, b), op in zip(NB201Genotype.EDGES, ops, strict=True):
        bend = bends[b - a] * (-1 if (a, b) == (1, 3) else 1)
        g.edges.append((f"n{a}", f"n{b}", op, bend, 0.5))
    return g


def darts_graph(gene, concat, kind: str) -> CellGraph:
    """A DARTS cell: inputs c_{k-2}, c_{k-1}, intermediate nodes 0.., output c_{k} (the concat)."""
    g = CellGraph(f"{kind} cell")
    steps = len(gene) // 2
    # The inputs above and below the line of intermediate nodes: their straight edges then
    # never pass through a node on the way.
    for s, label in enumerate(DARTS_INPUTS):
        g.nodes.append((f"s{s}", label, "input"))
        g.pos[f"s{s}"] = (0.0, 2.0 - 4.0 * s)
    for i in range(steps):
        g.nodes.append((f"s{i + 2}", str(i), "node"))
        g.pos[f"s{i + 2}"] = (STEP * (i + 1), 0.0)
    g.nodes.append(("out", "c_{k}", "output"))
    g.pos["out"] = (STEP * (steps + 1), 0.0)
    for k, (op, inp) in enumerate(gene):
        node = k // 2 + 2
        span = node - inp if inp >= 2 else 0
        # The edges fanning out of an input would put their labels side by side at one
        # height; staggered along the edges they do not meet.
        at = min(0.3 + 0.15 * (node - 2), 0.8) if inp < 2 else 0.5
        g.edges.append((f"s{inp}", f"s{node}", op, 0.6 * span if span > 1 else 0.0, at))
    for c in concat:
        span = steps + 2 - c
        # Below the line (negative), away from the labelled node-to-node arcs above it.
        g.edges.append((f"s{c}", "out", None, -0.45 * span if span > 1 else 0.0, 0.5))
    return g


def rnn_graph(gene, concat) -> CellGraph:
    """A DARTS RNN cell: input (x_t, h_{t-1}), highway node 0, nodes 1.. (one input and
    activation each), output h_t (the mean of the concat nodes)."""
    g = CellGraph("recurrent cell")
    g.nodes.append(("in", "x_t, h_{t-1}", "input"))
    g.pos["in"] = (0.0, 0.0)
    for i in range(len(gene) + 1):
        g.nodes.append((f"s{i}", str(i), "node"))
        g.pos[f"s{i}"] = (STEP * (i + 1), 0.0)
    g.nodes.append(("out", "h_{t}", "output"))
    g.pos["out"] = (STEP * (len(gene) + 2), 0.0)
    g.edges.append(("in", "s0", "highway", 0.0, 0.5))
    for i, (op, inp) in enumerate(gene, start=1):
        span = i - inp
        g.edges.append((f"s{inp}", f"s{i}", op, 0.6 * span if span > 1 else 0.0, 0.5))
    for c in concat:
        span = len(gene) + 1 - c
        g.edges.append((f"s{c}", "out", None, -0.45 * span if span > 1 else 0.0, 0.5))
    return g


def pair_graph(genotype) -> CellGraph:
    """A two-input cell: input (x_t, h_{t-1}), highway node 0, node k reading a = s_{k-1}
    (labelled with its op) and b (its second source, unlabelled), output h_t (the mean of the
    nodes, or the last)."""
    g = CellGraph("two-input recurrent cell")
    n = len(genotype.ops)
    g.nodes.append(("in", "x_t, h_{t-1}", "input"))
    g.pos["in"] = (0.0, 0.0)
    for i in range(n + 1):
        g.nodes.append((f"s{i}", str(i), "node"))
        g.pos[f"s{i}"] = (STEP * (i + 1), 0.0)
    g.nodes.append(("out", "h_{t}", "output"))
    g.pos["out"] = (STEP * (n + 2), 0.0)
    g.edges.append(("in", "s0", "highway", 0.0, 0.5))
    for k, op in enumerate(genotype.ops, start=1):
        g.edges.append((f"s{k - 1}", f"s{k}", op, 0.0, 0.5))
        b = {"s0": "s0", "previous": f"s{max(k - 2, 0)}", "hidden": "in"}[genotype.second]
        span = k - (0 if b == "in" else int(b[1:]))
        if span > 1 or b == "in":
            g.edges.append((b, f"s{k}", None, 0.5 * span, 0.5))
    outs = range(1, n + 1) if genotype.output == "mean" else [n]
    for c in outs:
        span = n + 1 - c
        g.edges.append((f"s{c}", "out", None, -0.45 * span if span > 1 else 0.0, 0.5))
    return g


def _op_style(op: str | None, free_ops: frozenset[str] | None) -> tuple[str, str]:
    """(colour, line style) of an edge's op."""
    if op == "none":
        return NONE_COLOR, "dashed"
    free = is_parameter_free(op) if free_ops is None else op is None or op in free_ops
    return (FREE_COLOR if free else PARAM_COLOR), "solid"


def _dot_label(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_node_label(text: str) -> str:
    # c_{k-2} as an HTML-like label with a real subscript, as in the DARTS paper's figures.
    if "_{" in text and text.endswith("}"):
        base, sub = text[:-1].split("_{", 1)
        return f"<{html.escape(base)}<SUB>{html.escape(sub)}</SUB>>"
    return _dot_label(text)


def to_dot(g: CellGraph) -> str:
    """The graph in graphviz's DOT language, left to right."""
    lines = [
        "digraph cell {",
        "  rankdir=LR; bgcolor=white;",
        '  node [style="filled,rounded", shape=box, fontname="Helvetica", fontsize=16,'
        " height=0.5, width=0.5, penwidth=1.5];",
        '  edge [fontname="Helvetica", fontsize=12, arrowsize=0.7];',
    ]
    for nid, label, role in g.nodes:
        shape = ", shape=circle" if role == "node" else ""
        lines.append(
            f"  {nid} [label={_dot_node_label(label)}, "
            f"fillcolor={_dot_label(ROLE_COLORS[role])}{shape}];"
        )
    for a, b, op, *_ in g.edges:
        if op is None:
            lines.append(f'  {a} -> {b} [color="#999999"];')
            continue
        color, style = _op_style(op, g.free_ops)
        lines.append(
            f"  {a} -> {b} [label={_dot_label(op)}, color={_dot_label(color)}, "
            f"fontcolor={_dot_label(color)}, style={style}, penwidth=1.6];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def has_graphviz() -> bool:
    """Whether graphviz's `dot` program is on PATH."""
    return shutil.which("dot") is not None


def draw_cell(g: CellGraph, path: Path) -> tuple[Path, str]:
    """Draw `g` to the PNG `path` with graphviz (its DOT source kept beside it), or with
    matplotlib when `dot` is missing or fails; (path, the renderer used)."""
    if has_graphviz():
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(to_dot(g))
        try:
            subprocess.run(
                ["dot", "-Tpng", "-Gdpi=96", "-o", str(path), str(dot_path)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            if path.is_file() and path.stat().st_size > 0:
                return path, "graphviz"
        except (OSError, subprocess.SubprocessError):
            pass  # a broken graphviz install should not cost the report its diagram
    return draw_cell_matplotlib(g, path), "matplotlib"


def _mathtext(label: str) -> str:
    return f"${label}$" if "_{" in label else label


NODE_RADIUS = 0.34


def _curve(p0, p1, bend: float, n: int = 40) -> list[tuple[float, float, float]]:
    """Points (x, y, t) of the quadratic Bezier from p0 to p1 bowed `bend` to the left of its
    direction, cut where it enters the two nodes' circles."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    # Control point: twice the bend out, so the curve's midpoint lies `bend` off the chord.
    cx = (x0 + x1) / 2 - 2 * bend * dy / length
    cy = (y0 + y1) / 2 + 2 * bend * dx / length
    points = []
    for k in range(n + 1):
        t = k / n
        x = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x1
        y = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y1
        if min(((x - a) ** 2 + (y - b) ** 2) ** 0.5 for a, b in (p0, p1)) >= NODE_RADIUS:
            points.append((x, y, t))
    return points


def draw_cell_matplotlib(g: CellGraph, path: Path) -> Path:
    """Draw `g` with matplotlib: nodes as circles at `g.pos`, edges as labelled curves."""
    from matplotlib.patches import Circle, FancyArrowPatch
    from matplotlib.path import Path as MplPath

    from diffnas.viz.figures import new_figure, save

    curves = [(op, at, _curve(g.pos[a], g.pos[b], bend)) for a, b, op, bend, at in g.edges]
    xs = [x for x, _ in g.pos.values()] + [p[0] for *_, c in curves for p in c]
    ys = [y for _, y in g.pos.values()] + [p[1] for *_, c in curves for p in c]
    x_lo, x_hi = min(xs) - 0.6, max(xs) + 0.6
    y_lo, y_hi = min(ys) - 0.5, max(ys) + 0.7
    scale = 0.7  # inches per data unit
    fig = new_figure((x_hi - x_lo) * scale, (y_hi - y_lo) * scale)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_title(g.title, fontsize=10)
    for op, at, points in curves:
        if len(points) < 2:
            continue
        color, style = _op_style(op, g.free_ops) if op is not None else ("#999999", "solid")
        ax.add_patch(
            FancyArrowPatch(
                path=MplPath([(x, y) for x, y, _ in points]),
                arrowstyle="-|>",
                mutation_scale=11,
                color=color,
                linestyle=style,
                linewidth=1.4 if op is not None else 1.0,
                zorder=1,
            )
        )
        if op is not None:
            x, y, _ = min(points, key=lambda p: abs(p[2] - at))
            ax.text(
                x,
                y,
                op,
                fontsize=7,
                color=color,
                ha="center",
                va="center",
                zorder=3,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
            )
    for nid, label, role in g.nodes:
        x, y = g.pos[nid]
        ax.add_patch(Circle((x, y), NODE_RADIUS, fc=ROLE_COLORS[role], ec="k", lw=1.2, zorder=4))
        ax.text(x, y, _mathtext(label), fontsize=10, ha="center", va="center", zorder=5)
    return save(fig, path)
