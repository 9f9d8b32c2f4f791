#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks (it has torch, numpy,
# scipy, pandas, pyarrow, matplotlib, scikit-learn, tqdm, safetensors,
# huggingface_hub, accelerate and pytest, and no package registry) into
# .wheels/, for `benchmarks/gpu_check.sh` there. Pure-Python wheels work on
# any machine; compiled ones are fetched for the GPU machine's Python.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]    # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-3.12}
mkdir -p .wheels
grep -qx ".wheels/" .git/info/exclude 2>/dev/null || echo ".wheels/" >> .git/info/exclude
PRESENT='^(torch|numpy|scipy|pandas|pyarrow|matplotlib|scikit-learn|tqdm|safetensors|huggingface-hub|accelerate|pytest|nvidia-.*|triton|torchvision|setuptools|pip|diffusion-lds-bench)=='
# Everything the venv holds beyond what the GPU machine has.
.venv/bin/pip freeze --exclude-editable | grep -viE "$PRESENT" > .wheels/requirements.txt
.venv/bin/pip download --no-deps --only-binary=:all: --python-version "$PY" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .wheels -r .wheels/requirements.txt
du -sh .wheels
