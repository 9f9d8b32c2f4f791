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
# Those packages and their own dependencies (names as pip freeze writes them).
PRESENT='^(torch|numpy|scipy|pandas|pyarrow|matplotlib|scikit-learn|tqdm|safetensors|huggingface[-_]hub|hf[-_]xet|accelerate|pytest|'\
'nvidia-.*|triton|torchvision|setuptools|pip|diffusion-lds-bench|sympy|mpmath|networkx|jinja2|markupsafe|filelock|fsspec|'\
'typing[-_]extensions|pillow|fonttools|kiwisolver|cycler|contourpy|pyparsing|python-dateutil|six|pytz|tzdata|packaging|pyyaml|'\
'joblib|threadpoolctl|psutil|requests|urllib3|idna|certifi|charset-normalizer|iniconfig|pluggy|pygments)=='
# Everything the venv holds beyond what the GPU machine has.
.venv/bin/pip freeze --exclude-editable | grep -viE "$PRESENT" > .wheels/requirements.txt
# A wheel for the GPU machine's Python where one exists; otherwise the
# package is pure Python and is built into a wheel here.
while read -r requirement; do
    .venv/bin/pip download --quiet --no-deps --only-binary=:all: --python-version "$PY" --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .wheels "$requirement" 2>/dev/null \
        || .venv/bin/pip wheel --quiet --no-deps -w .wheels "$requirement"
done < .wheels/requirements.txt
ls .wheels/*.whl | wc -l
du -sh .wheels
