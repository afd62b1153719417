"""`diffnas report`: the HTML report of search, training and selection run directories.

One real tiny search (NB201, synthetic data, 2 epochs) checks the report against what a search
really writes; hand-written run directories in the same formats cover DARTS cells, selections,
trainings, the collapse warning and bad inputs. A headless Chromium, when installed, renders
the page and checks that every image loads and no script error occurs.
"""

from __future__ import annotations

import html
import json
import math
import random
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from diffnas.cli import main
from diffnas.spaces.darts_cnn import edge_list
from diffnas.spaces.genotypes import DARTS_OPS, genotype_to_json
from diffnas.spaces.published import GENOTYPES
from diffnas.viz import ReportError, read_run, write_report
from diffnas.viz import cells as viz_cells

pytest.importorskip("matplotlib", reason="the report needs matplotlib: pip install matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "area", "col", "base"}


# ---------------------------------------------------------------------------------------------
# Helpers: HTML structure, PNG validity
# ---------------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Collects the attributes of img/a/link/script tags, text, and checks the tags nest."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.imgs: list[str] = []
        self.urls: list[str] = []
        self.scripts = 0
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in a:
                self.urls.append(a[key])
        if "id" in a:
            self.ids.append(a["id"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_page(index: Path) -> PageParser:
    """Parse index.html; assert the tags nest and every id is unique."""
    parser = PageParser()
    parser.feed(index.read_text(encoding="utf-8"))
    parser.close()
    assert not parser.problems, parser.problems
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    return parser


def assert_png(path: Path) -> tuple[int, int]:
    """A complete, non-empty PNG: signature, IHDR with a positive size, IEND at the end."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 50 and height > 50, (path, width, height)
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    assert len(data) > 2000, f"{path} is suspiciously small ({len(data)} bytes)"
    return width, height


def check_report(index: Path) -> PageParser:
    """The page parses, works offline (no scripts, nothing remote) and its images exist."""
    page = parse_page(index)
    assert page.scripts == 0
    for url in page.urls:
        assert "://" not in url and not url.startswith("//"), f"remote reference {url}"
    assert page.imgs, "no figures in the report"
    for src in page.imgs:
        target = index.parent / src
        assert target.is_file(), f"<img src={src!r}> does not resolve"
        assert_png(target)
    return page


# ---------------------------------------------------------------------------------------------
# Run directories in the formats the commands write
# ---------------------------------------------------------------------------------------------


def _jsonl(path: Path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _softmax_rows(rng: random.Random, n_edges: int, n_ops: int) -> list[list[float]]:
    rows = []
    for _ in range(n_edges):
        z = [math.exp(rng.gauss(0, 0.5)) for _ in range(n_ops)]
        rows.append([v / sum(z) for v in z])
    return rows


def write_darts_search(path: Path, collapse: bool, epochs: int = 3) -> Path:
    """A finished DARTS-space search directory (config, metrics, genotypes, genotype.json)."""
    path.mkdir(parents=True)
    (path / "config.toml").write_text(
        '[run]\nseed = 0\n\n[data]\ndataset = "synthetic"\n\n'
        '[space]\nname = "darts"\nsteps = 4\n\n'
        f"[search]\nepochs = {epochs}\ncollapse_warn = 0.5\n"
    )
    rng = random.Random(0)
    genotype = GENOTYPES.get("DARTS_V2").genotype
    if collapse:  # every normal-cell op a skip connection
        genotype = genotype._replace(normal=[("skip_connect", j) for _, j in genotype.normal])
    free = {"normal": 8 if collapse else 2, "reduce": 8}
    metrics, history = [], []
    for epoch in range(epochs):
        metrics.append(
            {
                "time": 1.0,
                "kind": "step",
                "epoch": epoch,
                "step": epoch,
                "lr": 0.1,
                "train_loss": 2.0,
                "train_acc": 10.0,
            }
        )
        weights = {k: _softmax_rows(rng, 14, len(DARTS_OPS)) for k in ("normal", "reduce")}
        metrics.append(
            {
                "time": 100.0 + 10 * epoch,
                "kind": "epoch",
                "epoch": epoch,
                "step": 2 * epoch + 2,
                "lr": 0.025,
                "train_loss": 2.3 - 0.1 * epoch,
                "train_acc": 10.0 + 5 * epoch,
                "val_loss": 2.35 - 0.1 * epoch,
                "valid_loss": 2.4 - 0.05 * epoch,
                "valid_acc": 9.0 + 4 * epoch,
                "genotype": str(genotype),
                "param_free_ops": free,
                "cell_ops": {"normal": 8, "reduce": 8},
                "param_free_kinds": {
                    "normal": {"skip_connect": free["normal"]},
                    "reduce": {"max_pool_3x3": 8},
                },
                "edge_entropy": {k: [2.0 - 0.1 * epoch] * 14 for k in ("normal", "reduce")},
                "collapse_warning": collapse and epoch >= 1,
                "epoch_time_s": 9.5 + epoch,
            }
        )
        history.append(
            {
                "time": 1.0,
                "epoch": epoch,
                "genotype": {**genotype_to_json(genotype), "weights": weights},
            }
        )
    _jsonl(path / "metrics.jsonl", metrics)
    _jsonl(path / "genotypes.jsonl", history)
    (path / "genotype.json").write_text(json.dumps(genotype_to_json(genotype), indent=2))
    return path


def _op_decision(step: int, cell: str, edge: int, chosen: str) -> dict:
    source, node = edge_list(4)[edge]
    return {
        "time": 1.0,
        "step": step,
        "epoch": step,
        "decision": "op",
        "cell": cell,
        "edge": edge,
        "from": source,
        "to": node,
        "criterion": "acc",
        "candidates": [
            {"op": op, "acc": 50.0 - 3 * (op == chosen) - i, "loss": 1.5 + 0.01 * i}
            for i, op in enumerate(DARTS_OPS)
        ],
        "chosen": chosen,
        "time_s": 0.5,
    }


def write_selection(search: Path) -> Path:
    """A DARTS-PT selection directory inside `search` (decisions of both kinds, tuning epochs)."""
    sel = search / "select-perturbation"
    sel.mkdir()
    shutil.copy(search / "config.toml", sel / "config.toml")
    decisions = [
        _op_decision(0, "normal", 3, "sep_conv_5x5"),
        _op_decision(0, "reduce", 7, "dil_conv_3x3"),
        {
            "time": 1.0,
            "step": 1,
            "epoch": 1,
            "decision": "node",
            "cell": "normal",
            "node": 3,
            "criterion": "acc",
            "rounds": [
                {
                    "candidates": [
                        {"edge": e, "from": j, "acc": 40.0 + j, "loss": 1.9}
                        for e, (j, to) in enumerate(edge_list(4))
                        if to == 3
                    ],
                    "dropped": 3,
                }
            ],
            "kept": [2, 4],
            "kept_from": [0, 2],
            "time_s": 0.7,
        },
    ]
    _jsonl(sel / "decisions.jsonl", decisions)
    genotype = GENOTYPES.get("DARTS_V1").genotype
    _jsonl(
        sel / "metrics.jsonl",
        [
            {
                "time": 1.0 + e,
                "kind": "epoch",
                "epoch": e,
                "step": e,
                "lr": 0.0025,
                "train_loss": 2.0,
                "train_acc": 30.0 + e,
                "valid_loss": 1.9,
                "valid_acc": 31.5 + e,
                "genotype": str(genotype),
                "decided_edges": 2 * e,
                "epoch_time_s": 1.5,
            }
            for e in range(2)
        ],
    )
    (sel / "genotype.json").write_text(json.dumps(genotype_to_json(genotype)))
    (sel / "result.json").write_text(json.dumps({"method": "perturbation", "decisions": 3}))
    return sel


def write_training(path: Path) -> Path:
    """A finished `diffnas train` directory (metrics with test_*, result.json)."""
    path.mkdir(parents=True)
    (path / "config.toml").write_text('[data]\ndataset = "synthetic"\n\n[train]\nepochs = 2\n')
    _jsonl(
        path / "metrics.jsonl",
        [
            {
                "time": 1.0,
                "kind": "epoch",
                "epoch": e,
                "lr": 0.1,
                "drop_path": 0.0,
                "train_loss": 2.3 - e,
                "train_acc": 10.0 + e,
                "test_loss": 2.2 - e,
                "test_acc": 12.5 + e,
                "epoch_time_s": 0.2,
            }
            for e in range(2)
        ],
    )
    genotype = GENOTYPES.get("NB201_BEST").genotype
    (path / "genotype.json").write_text(json.dumps(genotype_to_json(genotype)))
    (path / "result.json").write_text(
        json.dumps(
            {
                "genotype": str(genotype),
                "test_acc": 13.5,
                "test_loss": 1.2,
                "params": 7974,
                "macs": 1165088,
                "epochs": 2,
            }
        )
    )
    return path


# ---------------------------------------------------------------------------------------------
# Fixtures: run directories and their reports, built once per module
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nb201_search(tmp_path_factory) -> Path:
    """A real 2-epoch NB201 search on synthetic data, with a hand-written selection in it."""
    out = tmp_path_factory.mktemp("nb201") / "run"
    threads = torch.get_num_threads()  # run.threads sets torch's global thread count
    try:
        rc = main(
            [
                "search",
                "--out",
                str(out),
                *("--set", "search.epochs=2", "--set", "data.dataset=synthetic"),
                *("--set", "data.limit=96", "--set", "data.batch_size=24", "--set", "space.C=4"),
                *("--set", "run.threads=1", "--set", "run.progress=false"),
                *("--set", "run.tensorboard=false"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def nb201_report(nb201_search) -> Path:
    assert main(["report", str(nb201_search)]) == 0
    return nb201_search / "report" / "index.html"


@pytest.fixture(scope="module")
def darts_dirs(tmp_path_factory) -> dict[str, Path]:
    """Hand-written DARTS searches, one collapsing (with a selection) and one healthy."""
    root = tmp_path_factory.mktemp("darts")
    collapsed = write_darts_search(root / "collapsed", collapse=True)
    write_selection(collapsed)
    return {"collapsed": collapsed, "healthy": write_darts_search(root / "healthy", False)}


@pytest.fixture(scope="module")
def collapsed_report(darts_dirs) -> Path:
    return write_report(darts_dirs["collapsed"])


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_report_of_a_real_search_has_every_figure(nb201_search, nb201_report):
    page = check_report(nb201_report)
    names = {Path(src).name for src in page.imgs}
    expected = {"cell_cell.png", "curves.png", "diagnostics.png", "alphas_cell.png", "timing.png"}
    assert expected <= names, names
    records = [json.loads(line) for line in (nb201_search / "metrics.jsonl").open()]
    if any("nb201_acc" in r for r in records):  # the ground-truth table is installed
        assert "ground_truth.png" in names
    text = nb201_report.read_text()
    genotype = json.loads((nb201_search / "genotype.json").read_text())["arch"]
    assert genotype in text
    assert "name = &quot;nb201&quot;" in text  # config.toml, shown as text
    assert ("Collapse warning" in text) == records[-1]["collapse_warning"]


def test_darts_report_shows_both_cells_selection_and_decisions(collapsed_report):
    page = check_report(collapsed_report)
    names = {Path(src).name for src in page.imgs}
    for cell in ("normal", "reduce"):
        assert {f"cell_{cell}.png", f"alphas_{cell}.png"} <= names
        assert f"select-perturbation_cell_{cell}.png" in names  # the selected genotype
    assert "select-perturbation_decisions.png" in names
    text = collapsed_report.read_text()
    assert "selection-select-perturbation" in page.ids
    assert str(GENOTYPES.get("DARTS_V1").genotype).replace("'", "&#x27;") in text
    table = text[text.index('<table class="decisions">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + 3  # header and one row per decision
    assert "sep_conv_5x5" in table and "dil_conv_3x3" in table
    assert "inputs of node 1" in table and "keeps c_{k-2}, 0" in table


def test_collapse_warning_appears_only_when_the_diagnostics_flag_it(darts_dirs, collapsed_report):
    page = parse_page(collapsed_report)
    assert "collapse-warning" in page.ids
    text = collapsed_report.read_text()
    assert "normal: 8 of 8 ops (skip_connect x8)" in text
    assert "Flagged at epoch(s) 2, 3" in text
    healthy = write_report(darts_dirs["healthy"])
    page = check_report(healthy)
    assert "collapse-warning" not in page.ids
    assert "Collapse warning" not in healthy.read_text()
    assert "diagnostics.png" in {Path(s).name for s in page.imgs}  # still plotted


def test_final_cell_warning_for_a_disconnected_or_undecided_cell(tmp_path, darts_dirs):
    run = tmp_path / "run"
    shutil.copytree(darts_dirs["healthy"], run)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "final-cell-warning" not in parse_page(write_report(run, tmp_path / "a")).ids
    records[-1].update(disconnected=["normal"], entropy_ratio={"normal": 0.5, "reduce": 0.9995})
    _jsonl(run / "metrics.jsonl", records)
    page = check_report(write_report(run, tmp_path / "b"))
    assert "final-cell-warning" in page.ids
    text = (tmp_path / "b" / "index.html").read_text()
    assert "the derived normal cell has no path" in text
    assert "reduce cell at 99.950%" in text and "normal cell at" not in text  # default 0.99


def test_training_and_selection_directories(tmp_path, darts_dirs):
    train = write_training(tmp_path / "train")
    index = write_report(train, tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    page = check_report(index)
    text = index.read_text()
    assert "test accuracy" in text and "13.50 %" in text and "0.008 M" in text
    assert "curves.png" in {Path(s).name for s in page.imgs}
    assert read_run(train).kind == "train"
    # A selection directory on its own: its decisions and genotype.
    sel = darts_dirs["collapsed"] / "select-perturbation"
    index = write_report(sel, tmp_path / "sel")
    page = check_report(index)
    assert read_run(sel).kind == "select"
    assert "decisions" in page.ids
    assert {"cell_normal.png", "decisions.png", "curves.png"} <= {Path(s).name for s in page.imgs}


def test_cells_are_drawn_with_matplotlib_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(viz_cells.shutil, "which", lambda name: None)
    index = write_report(write_training(tmp_path / "train"), tmp_path / "r")  # an NB201 cell
    check_report(index)
    assert "drawn with matplotlib" in index.read_text()
    for kind, graph in viz_cells.cell_graphs(GENOTYPES.get("DARTS_V2").genotype):
        path, renderer = viz_cells.draw_cell(graph, tmp_path / "r" / f"{kind}.png")
        assert renderer == "matplotlib"
        assert_png(path)
    assert not list((tmp_path / "r").glob("*.dot"))


@pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz not installed: apt-get install graphviz"
)
def test_cells_are_drawn_with_graphviz_when_installed(collapsed_report):
    assert "drawn with graphviz" in collapsed_report.read_text()
    dot = (collapsed_report.parent / "cell_normal.dot").read_text()
    assert dot.count("->") == 8 + 4  # 2 inputs per node, 4 nodes concatenated


def test_bad_run_directories_give_clear_errors(tmp_path, darts_dirs, capsys):
    with pytest.raises(ReportError, match="no such run directory"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="has no metrics.jsonl"):
        write_report(tmp_path / "empty")
    run = shutil.copytree(darts_dirs["healthy"], tmp_path / "corrupt")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    with pytest.raises(ReportError, match=r"metrics\.jsonl: line 3 is not valid JSON"):
        write_report(run)
    # The CLI prints it as one line, exit status 2.
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffnas: error:") and "line 3" in err and "\n" not in err
    # A torn last line (a killed run) is skipped with a note instead.
    lines[2] = json.dumps({"kind": "epoch", "epoch": 9})[:20]
    (run / "metrics.jsonl").write_text("".join(lines[:3]))
    notes = read_run(run).notes
    assert any("metrics.jsonl: line 3 is incomplete" in n for n in notes), notes


def test_missing_matplotlib_names_the_install(tmp_path, darts_dirs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(ReportError, match="pip install matplotlib"):
        write_report(darts_dirs["healthy"], tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert main(["report", str(darts_dirs["healthy"])]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


# The probe a copy of the page gets (never the product): records script errors and, once every
# image has settled, writes what it found into the DOM for --dump-dom.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(e.message || ("failed: " + (e.target && e.target.src)));
}, true);
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                   .map(function (i) { return i.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({images: imgs.length, broken: broken,
                                    errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def _render(index: Path, profile: Path) -> dict:
    chromium = shutil.which("chromium")
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = proc.stdout
    start = dom.find('<pre id="probe-result">')
    assert start >= 0, f"no probe result (rc {proc.returncode}): {proc.stderr[-2000:]}"
    body = dom[start + len('<pre id="probe-result">') : dom.index("</pre>", start)]
    return json.loads(html.unescape(body))


def test_report_renders_in_headless_chromium(tmp_path, nb201_report):
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    copy = shutil.copytree(nb201_report.parent, tmp_path / "copy")
    text = (copy / "index.html").read_text()
    (copy / "index.html").write_text(text.replace("<head>", "<head>" + PROBE, 1))
    result = _render(copy / "index.html", tmp_path / "profile")
    assert result["images"] == len(parse_page(nb201_report).imgs) > 0
    assert result["broken"] == [], result
    assert result["errors"] == [], result
    # The probe itself must see a broken image, or the check above proves nothing.
    (copy / "index.html").write_text(
        (copy / "index.html").read_text().replace("</body>", '<img src="missing.png"></body>')
    )
    result = _render(copy / "index.html", tmp_path / "profile")
    assert result["broken"] == ["missing.png"], result


def test_recurrent_cell_graphs_and_chosen_ops():
    """The two-input cell draws node k from s_(k-1) with its op and from its second source;
    the derived ops of both recurrent genotypes map onto their weight rows."""
    from diffnas.spaces.darts_rnn import edge_offset
    from diffnas.spaces.genotypes import PairRNNGenotype, load_genotype
    from diffnas.viz.cells import cell_graphs
    from diffnas.viz.figures import chosen_ops

    g = PairRNNGenotype(("hadamard", "add", "tanh"), second="hidden", output="last")
    [(kind, graph)] = cell_graphs(g)
    assert kind == "recurrent" and len(graph.nodes) == 1 + 4 + 1
    labelled = [(a, b, op) for a, b, op, *_ in graph.edges if op]
    assert labelled == [("in", "s0", "highway"), ("s0", "s1", "hadamard"), ("s1", "s2", "add"),
                        ("s2", "s3", "tanh")]  # fmt: skip
    assert {(a, b) for a, b, op, *_ in graph.edges if op is None} == {
        ("in", "s1"), ("in", "s2"), ("in", "s3"), ("s3", "out")
    }
    assert chosen_ops(g, "rnn", 3) == {0: "hadamard", 1: "add", 2: "tanh"}
    v2 = load_genotype("DARTS_RNN_V2")
    ops = chosen_ops(v2, "rnn", 36)
    assert ops[edge_offset(1) + 0] == "sigmoid" and len(ops) == 8
