"""The run layer: typed config, run directory with atomic checkpoints, RNG state.

- `diffnas.runs.config`: `Config`, `load_config`, `save_config`, `describe_config`, `ConfigError`;
- `diffnas.runs.rundir`: `RunDir`, `resolve_out`, `CheckpointError`, `RunDirError`;
- `diffnas.runs.rng`: `seed_everything`, `capture_rng`, `restore_rng`;
- `diffnas.runs.distributed`: the torchrun process group, collectives, sharding and sync BN
  shared by multi-process search and final training.

Nothing is re-exported here: importing `config` from this file would make
`python -m diffnas.runs.config` (which prints docs/CONFIG.md) execute that module twice.
"""
