#!/usr/bin/env bash
# The prepared GPU check, for a CUDA machine with torch installed: one call,
# one report (at most about 8 minutes on one H200).
#
#   here:   bash benchmarks/gpu_wheels.sh         # the missing packages as wheels in .wheels/
#   there:  bash benchmarks/gpu_check.sh [STEP ...]   # with .wheels/ carried along; report in $OUT or results/gpu_check/
#
# Installs .wheels/*.whl (no index, no dependencies; the machine's torch
# stays), then runs the steps named (default: passes jobs rehearsal plan, in
# this order; each has a time limit, and together they take at most 8 minutes):
#   passes      the CIFAR-2 preset's training and measurement rates in fp32, tf32
#               and bf16, each eager and compiled (benchmarks/pass_rates.py)
#   jobs        one, two and four fp32 jobs sharing the GPU: aggregate rates
#   rehearsal   the CIFAR-2 rehearsal (tests/test_cifar2_rehearsal.py's config)
#               through Snakemake, four jobs per GPU
#   plan        `snakemake plan` for configs/cifar2.yaml: its `calibrate` job
#               measures the rates on the GPU, and the plan prints device-hours
# (RATES_DEVICE=cpu RATES_CONFIG=tests/configs/tiny.yaml runs passes and jobs on a CPU,
# to try the script before a GPU run.)
# and, by name only (measured before; their figures are in docs/memory-and-scale.md):
#   throughput  the preset's UNet, gradients and projections too (PRECISIONS="fp32 bf16"; benchmarks/throughput.py)
#   features    a projected-feature job of the preset's TRAK on 512 examples, with its
#               time and peak against the plan (benchmarks/projected_features.py)
#   resume      a SIGKILL-and-resume of a training of that UNet (benchmarks/resume_check.py)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-results/gpu_check}
mkdir -p "$OUTDIR"
REPORT="$OUTDIR/gpu_check.txt"
exec > >(tee "$REPORT") 2>&1
PY=${PYTHON:-python3}
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
if compgen -G ".wheels/*.whl" > /dev/null; then
    step "installing $(ls .wheels/*.whl | wc -l) wheels"
    "$PY" -m pip install --quiet --no-index --no-deps --target .gpu-site .wheels/*.whl
    export PYTHONPATH="$PWD/.gpu-site:$PWD/workflow_scripts${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$PWD/.gpu-site/bin:$PATH"
fi
export PYTHONPATH="$PWD/workflow_scripts${PYTHONPATH:+:$PYTHONPATH}"
STEPS=" ${*:-passes jobs rehearsal plan} "
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
RATES_CONFIG=${RATES_CONFIG:-configs/cifar2.yaml}
RATES_DEVICE=${RATES_DEVICE:-cuda}

if wanted passes; then
    step "training and measurement rates, $RATES_CONFIG, eager and compiled"
    timeout 180 "$PY" benchmarks/pass_rates.py --config "$RATES_CONFIG" --device "$RATES_DEVICE" \
        --passes fp32 tf32 bf16 bf16+compile fp32+compile tf32+compile | tee "$OUTDIR/pass_rates.txt" \
        || echo "(stopped with exit status $?: 124 is the step's time limit; the keys not printed were not measured)"
fi

if wanted jobs; then
    step "one, two and four fp32 jobs on the GPU at once"
    timeout 75 "$PY" benchmarks/pass_rates.py --config "$RATES_CONFIG" --device "$RATES_DEVICE" --passes fp32 --jobs 1 2 4 | tee "$OUTDIR/concurrent_jobs.txt" \
        || echo "(stopped with exit status $?: 124 is the step's time limit)"
fi

wanted throughput && for precision in ${PRECISIONS:-fp32 bf16}; do
    step "throughput, configs/cifar2.yaml, $precision"
    timeout 150 "$PY" benchmarks/throughput.py --config configs/cifar2.yaml --precision "$precision" --examples 8 --repeats 3 \
        | tee "$OUTDIR/throughput_$precision.txt"
done

if wanted features; then
    step "projected training features, configs/cifar2.yaml's trak, 512 examples"
    timeout 180 "$PY" benchmarks/projected_features.py --config configs/cifar2.yaml --method trak --n-train 512 --device cuda 2>&1 \
        | grep -v 'example/s' | tee "$OUTDIR/features.txt"
fi

if wanted resume; then
    step "SIGKILL and resume of a training on the GPU"
    timeout 120 "$PY" benchmarks/resume_check.py --config configs/cifar2.yaml --steps 40 --batch 32 --every 10
fi

wanted rehearsal && step "CIFAR-2 rehearsal on the GPU"
REHEARSAL="$OUTDIR/rehearsal"
wanted rehearsal && {
rm -rf "$REHEARSAL"
timeout 150 "$PY" - "$REHEARSAL" <<'PY'
import sys, time
from pathlib import Path
sys.path.insert(0, "tests")
import shutil
import workflow_api
from test_cifar2_rehearsal import rehearsal_config
from workflow_api import run_workflow, with_changes
if not workflow_api.SNAKEMAKE.exists():  # installed with --target: on PATH, not beside python
    workflow_api.SNAKEMAKE = Path(shutil.which("snakemake"))
workdir = Path(sys.argv[1]); workdir.mkdir(parents=True)
# Four jobs share the GPU: the rehearsal's jobs are small, and one at a time
# (about 30 s each, mostly start-up) it needs about 8 minutes.
config = with_changes(rehearsal_config(workdir), {"runtime": {"threads_per_job": 4, "device": "cuda", "jobs_per_gpu": 4}})
start = time.time()
result = run_workflow(config, workdir, "all", "plan", "--cores", "8", "--resources", "gpu=4")
print(f"exit {result.returncode} after {time.time() - start:.0f} s")
print(result.stderr[-3000:])
summary = workdir / "results" / "lds_summary.md"
print(summary.read_text() if summary.exists() else "no summary")
PY
tar czf "$OUTDIR/rehearsal_logs.tar.gz" -C "$REHEARSAL" results/logs results/benchmarks results/plan.tsv 2>/dev/null || true
}

wanted plan || { step "done"; exit 0; }
step "snakemake plan, configs/cifar2.yaml, rates measured by its calibrate job"
PLANDIR=$(mktemp -d)
timeout 60 "$PY" - "$PLANDIR" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
import shutil
import workflow_api
from cifar_archive import write_cifar10_archive
from workflow_api import ROOT, load_yaml, run_workflow, with_changes
if not workflow_api.SNAKEMAKE.exists():
    workflow_api.SNAKEMAKE = Path(shutil.which("snakemake"))
workdir = Path(sys.argv[1])
archive = write_cifar10_archive(workdir / "cifar-10-python.tar.gz", per_batch=10)
config = with_changes(load_yaml(ROOT / "configs" / "cifar2.yaml"), {"dataset.path": str(archive), "results": "results", "runtime.device": "cuda", "runtime.draws_per_second": None})
result = run_workflow(config, workdir, "plan")
print((workdir / "results" / "logs" / "plan.log").read_text() if result.returncode == 0 else result.stderr[-3000:])
PY
cp "$PLANDIR/results/plan.tsv" "$OUTDIR/plan_cifar2.tsv" 2>/dev/null || true
cp "$PLANDIR/results/calibration.json" "$OUTDIR/calibration_cifar2.json" 2>/dev/null || true
step "done"
