"""Export round trips: the exported network computes what the original module computes."""

from __future__ import annotations

import pytest
import torch

from diffnas.cli import main
from diffnas.export import export, is_training_run, trained_network
from diffnas.runs.config import Config, TrainConfig
from diffnas.spaces.final import build_final_network
from diffnas.spaces.published import GENOTYPES

CASES = {
    "darts": (GENOTYPES.get("DARTS_V2").genotype, TrainConfig(C=4, layers=3)),
    "nb201": (
        GENOTYPES.get("NB201_BEST").genotype,
        TrainConfig(C=4, N=1, auxiliary_weight=0, drop_path=0),
    ),
}
SHAPE = (3, 16, 16)


def _net(kind):
    torch.manual_seed(0)
    genotype, cfg = CASES[kind]
    model = build_final_network(genotype, cfg, 3, 10)
    # Trained-like BN statistics, so eval mode is not the identity.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *SHAPE))
    return model.eval(), genotype, Config(train=cfg)


@pytest.mark.parametrize("kind", list(CASES))
def test_state_dict_round_trip(tmp_path, kind):
    model, genotype, cfg = _net(kind)
    path = export(model, genotype, SHAPE, cfg, "state_dict", tmp_path / "n.pt")
    saved = torch.load(path, weights_only=True)
    fresh = build_final_network(genotype, cfg.train, 3, 10).eval()
    fresh.load_state_dict(saved["state_dict"])
    x = torch.randn(5, *SHAPE)
    assert torch.equal(fresh(x), model(x))
    assert saved["input_shape"] == list(SHAPE) and saved["genotype"]["space"] == kind


@pytest.mark.parametrize("kind", list(CASES))
def test_torchscript_round_trip(tmp_path, kind):
    model, genotype, cfg = _net(kind)
    path = export(model, genotype, SHAPE, cfg, "torchscript", tmp_path / "n.ts.pt")
    loaded = torch.jit.load(str(path))  # plain torch, no diffnas module involved
    x = torch.randn(7, *SHAPE)  # another batch size than the trace's
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", list(CASES))
def test_onnx_round_trip(tmp_path, kind):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, genotype, cfg = _net(kind)
    path = export(model, genotype, SHAPE, cfg, "onnx", tmp_path / "n.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, *SHAPE)
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)


def test_export_of_a_training_run_uses_its_trained_weights(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--genotype", "DARTS_V2", "--out", str(run)]
    for s in [
        "data.dataset=synthetic",
        "data.limit=64",
        "train.C=4",
        "train.layers=3",
        "train.epochs=1",
        "run.progress=false",
    ]:
        args += ["--set", s]
    assert main(args) == 0
    assert is_training_run(run)
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert "trained weights" in capsys.readouterr().out
    model, _, shape, _ = trained_network(run)
    assert shape == (3, 32, 32)
    loaded = torch.jit.load(str(run / "export" / "network.ts.pt"))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), rtol=1e-5, atol=1e-6)
    # A run's config is its own.
    assert main(["export", str(run), "--set", "train.C=8"]) == 2
