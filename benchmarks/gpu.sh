#!/usr/bin/env bash
# Every measurement the GPU claims rest on, in one run (benchmarks/gpu.py): whoever has a GPU runs this
# first and commits the JSONs it writes (benchmarks/README.md, "Whoever has a GPU runs this first").
#
#   bash benchmarks/gpu.sh                       # JSONs under $OUT, else benchmarks/results/gpu_<date>/
#   bash benchmarks/gpu.sh --out DIR             # under DIR
#   bash benchmarks/gpu.sh --smoke --out DIR     # every path on the CPU at tiny shapes (CI runs this)
#
# From a fresh checkout, no install: plmexit runs from src/. The python is $PLMEXIT_PYTHON, else the
# checkout's .venv, else python3 (a GPU image's, with torch and transformers). fair-esm and Biopython,
# missing from such images, are installed from the wheels in $PLMEXIT_WHEELS (default .whl/) into a
# temporary folder (the message below says how to download them where pip reaches an index).
# The whole run is stopped after $PLMEXIT_GPU_TIMEOUT seconds (default 470: its time budgets add up to under 7 minutes on an H100);
# each measurement writes its JSON as it ends, so a stopped run keeps what it finished.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

python="${PLMEXIT_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"

# fair-esm and Biopython: what plmexit needs beyond a GPU image's torch, transformers, scipy and scikit-learn.
if ! "$python" -c "import esm, Bio" 2>/dev/null; then
  wheels="${PLMEXIT_WHEELS:-$repo/.whl}"
  shopt -s nullglob
  found=("$wheels"/*.whl)
  if (( ${#found[@]} == 0 )); then
    echo "gpu.sh: $python lacks fair-esm or Biopython and $wheels holds no wheels; where pip reaches an index run:" \
         "pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 fair-esm==2.0.0 biopython==1.88 -d .whl" \
         "(match the GPU machine's python) and bring .whl along" >&2
    exit 2
  fi
  site="$(mktemp -d)"
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "${found[@]}"
  export PYTHONPATH="$PYTHONPATH:$site"
fi

exec timeout --kill-after=10 "${PLMEXIT_GPU_TIMEOUT:-470}" "$python" -u benchmarks/gpu.py "$@"
