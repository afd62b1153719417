#!/usr/bin/env bash
# One-time set-up on a fresh machine: torch, diffnas itself, the NB201 table, Fashion-MNIST,
# and chromium + graphviz for `diffnas report` and its test.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: keep an installed torch >= 2.3; otherwise the CPU build 2.13.0 (found locally here;
# a plain `pip install torch` would pull a multi-GB CUDA build).
if ! $PY - <<'PYEOF' 2>/dev/null
import torch, sys
major, minor = (int(v) for v in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 3) else 1)
PYEOF
then
  $PY -m pip install -q torch==2.13.0
fi

$PY -m pip install -q -e ".[test]"

# Ground-truth accuracies of all 15,625 NB201 cells. --no-deps: its declared dependencies
# (pandas, ...) are not needed; diffnas reads the table with a restricted unpickler.
$PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('analognasbench') is None)" \
  || $PY -m pip install -q --no-deps analog-nasbench==0.1.3

# Fashion-MNIST, the real dataset of the quickstart, from Debian's dataset-fashion-mnist.
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    sudo apt-get install -y -q dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST is not installed and apt-get is not available here." >&2
    echo "      Put the four idx .gz files from github.com/zalandoresearch/fashion-mnist in a" >&2
    echo "      directory and pass --set data.data_dir=DIR (or set DIFFNAS_DATA)." >&2
  fi
fi

# `diffnas report`: graphviz's `dot` draws the cell diagrams (matplotlib draws them without it),
# and tests/test_report.py renders the report in a headless chromium (skipped without one).
# Optional: a failure here never fails the set-up.
REPORT_PKGS=""
command -v chromium >/dev/null || REPORT_PKGS=" chromium"
command -v dot >/dev/null || REPORT_PKGS="$REPORT_PKGS graphviz"
if [ -n "$REPORT_PKGS" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2086  # the list is meant to split into package names
    apt-get install -y -q $REPORT_PKGS >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $REPORT_PKGS >/dev/null 2>&1; } \
      || echo "note: could not install$REPORT_PKGS with apt-get; diffnas report still works" \
              "(cells drawn with matplotlib; the browser test is skipped)" >&2
  else
    echo "note:$REPORT_PKGS not installed (apt-get install$REPORT_PKGS as root): diffnas report" \
         "draws cells with matplotlib and its browser test is skipped" >&2
  fi
fi
