"""Final networks of genotypes and their training: structure, sizes, drop-path, auxiliary head,
exact resume, and the `train` / `info` commands."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from diffnas.cli import main
from diffnas.ops.cnn import FactorizedReduce, Identity, Zero, make_op
from diffnas.runs.config import TrainConfig, load_config
from diffnas.runs.rundir import RunDir
from diffnas.spaces.darts_eval import DartsNetwork
from diffnas.spaces.final import (
    FinalNetworkError,
    build_final_network,
    check_final_config,
    count_params,
    space_family,
)
from diffnas.spaces.genotypes import Genotype, NB201Genotype, load_genotype
from diffnas.spaces.nb201 import EDGES, NB201Net
from diffnas.spaces.published import GENOTYPES
from diffnas.train import train_image

DARTS_V2 = GENOTYPES.get("DARTS_V2").genotype


def _op_type(name: str, stride: int) -> type:
    return type(make_op(name, 4, 4, stride, affine=True))


@pytest.mark.parametrize("name", ["DARTS_V2", "ENNAS", "darts_pt_s5_0"])
def test_darts_network_has_exactly_the_genotypes_ops_and_edges(name):
    g = GENOTYPES.get(name).genotype
    layers = 6
    net = DartsNetwork(g, C=4, layers=layers, in_channels=3, num_classes=10)
    assert len(net.cells) == layers
    for i, cell in enumerate(net.cells):
        reduction = i in (layers // 3, 2 * layers // 3)
        assert cell.reduction == reduction
        gene, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
        assert cell.inputs == [j for _, j in gene]
        assert cell.op_names == [op for op, _ in gene]
        assert cell.concat == list(concat)
        assert len(cell.ops) == len(gene)
        for (op, j), module in zip(gene, cell.ops, strict=True):
            stride = 2 if reduction and j < 2 else 1
            assert type(module) is _op_type(op, stride), (i, op, j)
        # The cell after a reduction cell reduces its first input by FactorizedReduce.
        reduction_prev = i - 1 in (layers // 3, 2 * layers // 3)
        assert isinstance(cell.preprocess0, FactorizedReduce) == reduction_prev
    # No op outside the genotype anywhere in the network.
    kinds = Counter(type(m) for cell in net.cells for m in cell.ops)
    expected = Counter(
        _op_type(op, 2 if cell.reduction and j < 2 else 1)
        for cell in net.cells
        for op, j in zip(cell.op_names, cell.inputs, strict=True)
    )
    assert kinds == expected


def test_darts_v2_counts_as_in_the_paper():
    net = build_final_network(DARTS_V2, TrainConfig(), 3, 10)  # C=36, L=20
    n = count_params(net)
    # The original code's count (auxiliary head left out): 3.349342M; the paper rounds to 3.3M.
    assert n == 3_349_342
    assert abs(n - 3.3e6) / 3.3e6 < 0.03
    assert count_params(net, auxiliary=True) > n


@pytest.mark.parametrize(
    "name", [n for n in GENOTYPES.names() if n.startswith(("darts_pt", "blank_pt", "ENNAS"))]
)
def test_published_parameter_counts_match_their_sources(name):
    p = GENOTYPES.get(name)
    if p.params_m is None:
        pytest.skip(f"{name}: its source gives no parameter count")
    n = count_params(build_final_network(p.genotype, TrainConfig(), 3, 10))
    assert abs(n / 1e6 - p.params_m) < 0.005 + 1e-9


def test_every_published_image_genotype_builds_and_runs():
    for name in GENOTYPES.names():
        g = load_genotype(name)
        if space_family(g) not in ("darts", "nb201"):
            continue  # the RNN cells are language-model cores: tests/test_lm.py builds them
        cfg = TrainConfig(C=4, layers=3, N=1)
        if isinstance(g, NB201Genotype):
            cfg = TrainConfig(C=4, N=1, auxiliary_weight=0, drop_path=0)
        net = build_final_network(g, cfg, 3, 10).eval()
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_nb201_network_has_the_cells_ops():
    g = GENOTYPES.get("NB201_BEST").genotype
    net = NB201Net(g, C=4, N=2)
    cells = [m for m in net.cells if hasattr(m, "ops")]
    assert len(cells) == 6
    for cell in cells:
        assert cell.ops == g.ops
        for op, module in zip(g.ops, cell.edges, strict=True):
            assert type(module) is _op_type(op, 1)
    assert len(EDGES) == len(g.ops)


def test_zero_op_and_repeated_inputs_build_as_written():
    g = GENOTYPES.get("ENNAS").genotype
    net = DartsNetwork(g, C=4, layers=3)
    assert any(isinstance(m, Zero) for m in net.modules())
    assert net.cells[0].inputs[:2] == [1, 1]


def _tiny_net(**kw) -> DartsNetwork:
    torch.manual_seed(0)
    return DartsNetwork(DARTS_V2, C=4, layers=3, in_channels=3, num_classes=10, **kw)


def test_drop_path_is_identity_in_eval_and_random_in_training():
    net = _tiny_net()
    x = torch.randn(8, 3, 16, 16)
    net.eval()
    net.drop_path_prob = 0.0
    clean = net(x)
    net.drop_path_prob = 0.5
    assert torch.equal(net(x), clean)
    net.train()
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    b = net(x)
    assert not torch.allclose(a, b)
    # Identity ops are never dropped: a cell of only skip connections ignores drop-path.
    skip = Genotype(
        [("skip_connect", 0), ("skip_connect", 1)] * 4, [2, 3, 4, 5], DARTS_V2.reduce, [2, 3, 4, 5]
    )
    cell = DartsNetwork(skip, C=4, layers=3).cells[0].train()
    assert all(isinstance(op, Identity) for op in cell.ops)
    s = torch.randn(4, 12, 8, 8)
    torch.manual_seed(3)
    first = cell(s, s, drop_prob=0.0)
    torch.manual_seed(3)
    assert torch.equal(cell(s, s, drop_prob=0.9), first)


def test_auxiliary_head_contributes_only_in_training():
    net = _tiny_net()
    plain = _tiny_net(auxiliary=False)
    plain.load_state_dict(
        {k: v for k, v in net.state_dict().items() if not k.startswith("auxiliary.")}
    )
    x = torch.randn(4, 3, 16, 16)
    net.eval()
    plain.eval()
    logits, aux = net(x, with_aux=True)
    assert aux is None
    assert torch.equal(logits, plain(x))
    net.train()
    logits, aux = net(x, with_aux=True)
    assert aux is not None and aux.shape == (4, 10)
    aux.sum().backward()
    assert net.auxiliary.classifier.weight.grad is not None
    assert net.classifier.weight.grad is None  # the main head is not on the aux path


@pytest.mark.parametrize("size", [8, 7, 28, 32, 9])
def test_auxiliary_head_works_for_any_image_size(size):
    net = DartsNetwork(DARTS_V2, C=4, layers=3, in_channels=1)
    net.train()
    x = torch.randn(2, 1, size * 4, size * 4)  # two reductions: feature maps of side `size`
    _, aux = net(x, with_aux=True)
    assert aux.shape == (2, 10)


def test_auxiliary_pool_is_dartss_on_8x8():
    from diffnas.spaces.darts_eval import AuxiliaryHead

    head = AuxiliaryHead(4, 10)
    x = torch.randn(2, 4, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(torch.relu(x), 5, stride=3)
    expected = head.classifier(head.features(pooled).flatten(1))
    assert torch.allclose(head(x), expected)


def test_nb201_network_refuses_darts_only_settings():
    g = GENOTYPES.get("NB201_BEST").genotype
    with pytest.raises(FinalNetworkError, match="auxiliary_weight=0"):
        check_final_config(g, TrainConfig())
    check_final_config(g, TrainConfig(auxiliary_weight=0, drop_path=0))
    check_final_config(DARTS_V2, TrainConfig())


def _train_cfg(out, epochs=3, genotype="DARTS_V2"):
    return load_config(
        None,
        [
            "data.dataset=synthetic",
            "data.batch_size=64",
            "data.cutout=8",
            f"train.genotype={genotype}",
            "train.C=4",
            "train.layers=3",
            f"train.epochs={epochs}",
            "train.drop_path=0.3",
            "run.progress=false",
            "run.threads=1",
            f"run.out={out}",
        ],
    )


def _strip_times(records):
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_time_s")} for r in records]


def test_resume_equals_uninterrupted(tmp_path):
    full = RunDir(tmp_path / "full").create(_train_cfg(tmp_path / "full"))
    result = train_image(full.read_config(), full, log=lambda s: None)
    part = RunDir(tmp_path / "part").create(_train_cfg(tmp_path / "part"))
    train_image(part.read_config(), part, log=lambda s: None, stop_after=1)
    assert not (part.path / "result.json").exists()
    resumed = train_image(part.read_config(), part, resume=True, log=lambda s: None)
    assert _strip_times(full.read_metrics()) == _strip_times(part.read_metrics())
    assert len(full.read_metrics()) == 3
    assert resumed["test_acc"] == result["test_acc"]
    a = full.load_checkpoint()["trainer"]["model"]
    b = part.load_checkpoint()["trainer"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Drop-path ramps linearly; the learning rate follows the cosine.
    records = full.read_metrics()
    assert [r["drop_path"] for r in records] == pytest.approx([0.0, 0.1, 0.2])
    assert records[0]["lr"] == pytest.approx(0.025)


def test_train_command_writes_the_result(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--genotype",
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
            "--set",
            "data.dataset=synthetic",
            "--set",
            "train.C=4",
            "--set",
            "train.N=1",
            "--set",
            "train.epochs=1",
            "--set",
            "run.progress=false",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["network"] == "NB201Net" and 0 <= result["test_acc"] <= 100
    assert result["params"] == result["params_with_aux"] > 0
    # The NB201 recipe was the default config.
    cfg = RunDir(out).read_config()
    assert cfg.train.lr == 0.1 and cfg.train.nesterov and cfg.data.batch_size == 256
    assert "test_acc" in RunDir(out).read_metrics()[-1]


def test_train_command_errors(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "no genotype to train" in capsys.readouterr().err
    assert main(["train", "--genotype", "NOPE"]) == 2
    assert "not a published genotype" in capsys.readouterr().err
    out = tmp_path / "bad"
    args = ["train", "--genotype", "NB201_BEST", "--set", "train.drop_path=0.2", "--out", str(out)]
    assert main(args) == 2
    assert "no auxiliary head and no drop-path" in capsys.readouterr().err
    assert not out.exists()  # checked before the run directory is made


def test_info_command(capsys):
    assert main(["info", "DARTS_V2"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 3,349,342" in out and "multiply-adds:" in out
    assert main(["info", "--list"]) == 0
    assert "DARTS_V1" in capsys.readouterr().out
    assert main(["info", "DARTS_V2", "--input", "3x32"]) == 2
    assert "CxHxW" in capsys.readouterr().err
