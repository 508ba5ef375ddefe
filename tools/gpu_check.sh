#!/usr/bin/env bash
# The project's check on a real NVIDIA GPU, in one go (under 8 minutes on one GPU):
#   1. phprof devices --measure       what the driver offers, and what one read of each field costs
#   2. phprof calibrate               the GPU's power fields: period, window, lag, rise, settling
#   3. validation by isolation        tools/gpu_validate.py: modules of very different power, each
#                                     measured alone from the energy counter, against phprof's
#                                     attribution of the whole model (and the time-proportional split)
#   4. reference traces               gpt2, bert-base-uncased, t5-small: trace + report (calibrated)
# Everything goes under traces/gpu-check-<gpu>-<date>/ with a README.md of tables.
#
# Without a GPU (no CUDA torch, or no NVIDIA driver) it stops before the first GPU-only step,
# saying why, and exits 77 ("skipped"); step 1 still runs against whatever NVML library is
# visible (PHPROF_NVML_LIB: the tests' fake). Exit 0: every step ran; 1: a step failed.
#
#   tools/gpu_check.sh [OUT_DIR]          PHPROF_GPU_CHECK_QUICK=1: shorter runs (a smoke test)
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PHPROF=${PHPROF:-phprof}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${1:-traces/gpu-check-$STAMP}
mkdir -p "$OUT"
QUICK=${PHPROF_GPU_CHECK_QUICK:-0}
MEASURE_S=5; N=100
if [ "$QUICK" = 1 ]; then MEASURE_S=1; N=20; fi
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started )) s] $*" >&2; }
fail() { echo "gpu_check: $*" >&2; exit 1; }

step "phprof devices --measure $MEASURE_S"
$PHPROF devices --measure "$MEASURE_S" > "$OUT/devices.txt" 2> "$OUT/devices.err" || fail "phprof devices failed (see $OUT/devices.err)"
cat "$OUT/devices.txt"

why=$($PY - <<'PY'
import torch
from phprof.sources import NvmlSource
found = NvmlSource.probe()
if not torch.cuda.is_available():
    print(f"torch {torch.__version__} sees no CUDA GPU (built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'without CUDA'})")
elif not found.available:
    print(f"NVML is not available: {found.reason}")
elif "fake" in (found.devices[0].get("driver") or ""):
    print("the NVML library is the tests' fake (PHPROF_NVML_LIB), not a real driver")
PY
) || fail "could not ask torch and NVML whether a GPU is here"
if [ -n "$why" ]; then
    echo "gpu_check: no GPU here: $why. Stopping before the GPU-only steps (calibrate, validation, reference traces); $OUT/devices.txt holds step 1." | tee "$OUT/STOPPED.txt" >&2
    exit 77
fi

step "phprof calibrate --gpu 0"
quick=(); [ "$QUICK" = 1 ] && quick=(--quick)
$PHPROF calibrate --gpu 0 "${quick[@]}" -o "$OUT/calibration.json" > "$OUT/calibration.txt" || fail "phprof calibrate failed"
cat "$OUT/calibration.txt"

step "validation by isolation"
$PY tools/gpu_validate.py --out "$OUT" --calibration "$OUT/calibration.json" "${quick[@]}" > "$OUT/validation.md" \
    || fail "the validation failed"
cat "$OUT/validation.md"

# name:model (t5-small is not among the built-in models: its published config is in tools/configs/)
for entry in gpt2:gpt2 bert-base-uncased:bert-base-uncased t5-small:tools/configs/t5-small.json; do
    safe=${entry%%:*}; model=${entry#*:}
    step "reference trace: $safe"
    $PHPROF trace "$model" -n "$N" --warmup 5 --device cuda --output "$OUT/$safe.h5" --overwrite > "$OUT/$safe.trace.txt" \
        || fail "phprof trace $safe failed"
    $PHPROF report "$OUT/$safe.h5" --sensor "$OUT/calibration.json" --markdown > "$OUT/$safe.report.md" \
        || fail "phprof report $safe failed"
    $PHPROF report "$OUT/$safe.h5" --json > "$OUT/$safe.report.json" || fail "phprof report --json $safe failed"
done

step "README"
$PY tools/gpu_validate.py --readme "$OUT" > "$OUT/README.md" || fail "writing the README failed"
cat "$OUT/README.md"
step "done: everything is in $OUT"
