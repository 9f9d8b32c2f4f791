#!/usr/bin/env bash
# Create ./.venv with everything the workflow and its tests need.
#
#   bash envs/setup_venv.sh          # CPU-only machine (no CUDA wheels)
#   TORCH=installed bash envs/setup_venv.sh
#                                    # keep a torch you installed into .venv first
#                                    # (e.g. a CUDA build), install the rest around it
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ "${TORCH:-cpu}" = "installed" ]; then
    .venv/bin/pip install -r envs/requirements.txt
else
    # The constraints keep curvlinops -> backpack -> torchvision from pulling
    # the newest torch and several GB of CUDA wheels.
    .venv/bin/pip install -c envs/constraints-cpu.txt -r envs/requirements.txt
    # PyPI's torchvision wheel is built against CUDA torch and fails to import
    # next to CPU torch, which breaks `import diffusers`. Nothing here uses it
    # (only backpack's example helpers import it), so remove it.
    .venv/bin/pip uninstall -y torchvision
fi
.venv/bin/pip install -r envs/requirements-dev.txt
.venv/bin/pip install --no-deps -e .
.venv/bin/python -c "import diffusers, curvlinops, snakemake, ldsbench; print('environment ready')"
