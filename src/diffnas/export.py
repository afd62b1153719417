"""Export the final network of a genotype: a PyTorch state_dict, TorchScript or ONNX.

The source is a training run directory (`diffnas train`: the trained weights of its latest
checkpoint) or a genotype (published name, arch string, genotype.json, search run directory:
freshly initialised weights, sized by the training recipe). TorchScript and ONNX files load
without diffnas (`torch.jit.load`, `onnxruntime.InferenceSession`); they hold the network in eval
mode (no drop-path, no auxiliary head) and take a batch of any size of images of the exported
input shape.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from diffnas.registry import Registry
from diffnas.runs.config import Config
from diffnas.runs.rundir import CHECKPOINT_FILE, RunDir, RunDirError, file_in_the_way
from diffnas.spaces.final import build_final_network
from diffnas.spaces.genotypes import genotype_to_json, load_genotype

EXPORTERS: Registry = Registry("export format")


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why and what to do."""


class _EvalLogits(nn.Module):
    """The network in eval mode, returning logits only (what the exported graph computes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x):
        return self.model(x)


def is_training_run(path: str | Path) -> bool:
    """Whether `path` is a `diffnas train` run directory with a checkpoint."""
    p = Path(path)
    return (
        (p / "config.toml").is_file()
        and (p / CHECKPOINT_FILE).is_file()
        and bool(RunDir(p).read_config().train.genotype)
    )


def trained_network(path: str | Path) -> tuple[nn.Module, object, tuple[int, int, int], Config]:
    """(network with the run's latest trained weights, genotype, input shape, config)."""
    run = RunDir(path)
    cfg = run.read_config()
    genotype = load_genotype(str(run.path))
    state = run.load_checkpoint()
    if "trainer" not in state:
        raise RunDirError(f"{run.path} is not a training run (its checkpoint has no trained net)")
    weights = state["trainer"]["model"]
    # The first conv of the stem (whichever stem) reads the images.
    in_channels = next(w for k, w in weights.items() if k.startswith("stem.") and w.dim() == 4)
    in_channels = in_channels.shape[1]
    num_classes = weights["classifier.weight"].shape[0]
    model = build_final_network(genotype, cfg.train, in_channels, num_classes)
    model.load_state_dict(weights)
    result = run.path / "result.json"
    size = json.loads(result.read_text())["input_shape"] if result.is_file() else None
    shape = tuple(size) if size else (in_channels, 32, 32)
    return model, genotype, shape, cfg


@EXPORTERS.register("state_dict")
def export_state_dict(model, genotype, shape, cfg, path: Path) -> None:
    """torch.save of the weights with the genotype, input shape and `[train]` config."""
    torch.save(
        {
            "state_dict": model.state_dict(),
            "genotype": genotype_to_json(genotype),
            "input_shape": list(shape),
            "train_config": asdict(cfg.train),
        },
        path,
    )


@EXPORTERS.register("torchscript")
def export_torchscript(model, genotype, shape, cfg, path: Path) -> None:
    """A traced TorchScript module of the eval-mode network."""
    example = torch.zeros(2, *shape)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks (e.g. odd sizes in FactorizedReduce) become constants of the trace: the
        # file is for images of this size, any batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(_EvalLogits(model), example)
    traced.save(str(path))


@EXPORTERS.register("onnx")
def export_onnx(model, genotype, shape, cfg, path: Path) -> None:
    """An ONNX graph of the eval-mode network, with a dynamic batch dimension."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
            "pip install onnx onnxscript (and onnxruntime to run the file)"
        ) from None
    example = torch.zeros(2, *shape)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            _EvalLogits(model),
            (example,),
            dynamic_shapes=({0: batch},),
            input_names=["images"],
            output_names=["logits"],
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


SUFFIX = {"state_dict": ".pt", "torchscript": ".ts.pt", "onnx": ".onnx"}


def export(model, genotype, shape, cfg, fmt: str, path: str | Path) -> Path:
    """Write the network in format `fmt` to `path` (its parent made if needed). A failed
    export leaves nothing behind: no partial file, no directory it made."""
    path = Path(path)
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise ExportError(f"cannot write {path}: {blocker} is a file, not a directory")
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a directory; give a file name for --out")
    made = [p for p in reversed(path.parents) if not p.exists()]
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        EXPORTERS.get(fmt)(model.eval(), genotype, shape, cfg, path)
    except BaseException:
        if not existed:
            path.unlink(missing_ok=True)
        for p in reversed(made):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    return path
