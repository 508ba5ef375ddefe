#!/usr/bin/env bash
# The project's check on a real NVIDIA GPU, in one go (under 8 minutes on one GPU):
#   1. phprof devices --measure       what the driver offers, and what one read of each field costs
#   2. the CUDA path (issue 19)       torch.profiler.supported_activities(); each CUDA device's NVML
#                                     board by UUID, also under CUDA_VISIBLE_DEVICES=0 (and =last);
#                                     phprof trace gpt2 -n 50 --device cuda + phprof report, and a
#                                     check of the trace: kernels in every inference, each inference's
#                                     span covering its kernels, Kineto's messages, the board matched
#   3. phprof calibrate               the GPU's power fields: period, window, lag, rise, settling
#   4. validation by isolation        tools/gpu_validate.py: modules of very different power, each
#                                     measured alone from the energy counter, against phprof's
#                                     attribution of the whole model (and the time-proportional split)
#   5. reference traces               gpt2, bert-base-uncased, t5-small: trace + report (calibrated)
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
    echo "gpu_check: no GPU here: $why. Stopping before the GPU-only steps (CUDA path, calibrate, validation, reference traces); $OUT/devices.txt holds step 1." | tee "$OUT/STOPPED.txt" >&2
    exit 77
fi

step "the CUDA path: the profiler's activities, each device's NVML board, gpt2 -n 50 traced and reported"
cuda_path() {  # prints, and fails on a wrong answer
    $PY - <<'PY' || return 1
import os, sys, torch
from phprof.sources import NvmlSource
from phprof.tracing.cudadevice import cuda_device, measuring_gpu
acts = sorted(a.name for a in torch.profiler.supported_activities())
print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!s} CUDA_DEVICE_ORDER={os.environ.get('CUDA_DEVICE_ORDER')!s}")
print("torch.profiler.supported_activities():", acts)
nvml = {d["index"]: d["uuid"] for d in NvmlSource.probe().devices}
print("NVML boards:", nvml)
ok = "CUDA" in acts
for i in range(torch.cuda.device_count()):
    d = f"cuda:{i}"
    c = cuda_device(d)
    gpu, m = measuring_gpu(d, "nvml")
    print(f"{d}: {c.name} uuid {c.uuid} pci {c.pci} -> NVML board {gpu} {m.get('nvml_uuid')} (by {m.get('matched_by')})")
    ok = ok and gpu is not None and m["nvml_uuid"].lower().endswith(c.uuid.lower())
want = os.environ.get("PHPROF_EXPECT_BOARD")  # the physical board CUDA_VISIBLE_DEVICES names (PCI order)
if want is not None:
    gpu, m = measuring_gpu("cuda:0", "nvml")
    print(f"cuda:0 should be NVML board {want}: it is {gpu}")
    ok = ok and gpu == int(want)
sys.exit(0 if ok else 1)
PY
}
cuda_path > "$OUT/cuda-path.txt" 2>&1 || { cat "$OUT/cuda-path.txt"; fail "the CUDA path check failed (see $OUT/cuda-path.txt)"; }
CUDA_VISIBLE_DEVICES=0 CUDA_DEVICE_ORDER=PCI_BUS_ID PHPROF_EXPECT_BOARD=0 cuda_path >> "$OUT/cuda-path.txt" 2>&1 \
    || { cat "$OUT/cuda-path.txt"; fail "under CUDA_VISIBLE_DEVICES=0, cuda:0 is not NVML's board 0"; }
last=$(( $(nvidia-smi -L 2>/dev/null | wc -l) - 1 ))
if [ "$last" -gt 0 ]; then
    CUDA_VISIBLE_DEVICES=$last CUDA_DEVICE_ORDER=PCI_BUS_ID PHPROF_EXPECT_BOARD=$last cuda_path >> "$OUT/cuda-path.txt" 2>&1 \
        || { cat "$OUT/cuda-path.txt"; fail "under CUDA_VISIBLE_DEVICES=$last, cuda:0 is not NVML's board $last"; }
fi
$PHPROF trace gpt2 -n 50 --device cuda --output "$OUT/gpt2-n50.h5" --overwrite > "$OUT/gpt2-n50.trace.txt" 2>&1 \
    || { cat "$OUT/gpt2-n50.trace.txt"; fail "phprof trace gpt2 -n 50 --device cuda failed"; }
$PHPROF report "$OUT/gpt2-n50.h5" > "$OUT/gpt2-n50.report.txt" 2>&1 || fail "phprof report gpt2-n50 failed"
$PY - "$OUT/gpt2-n50.h5" >> "$OUT/cuda-path.txt" 2>&1 <<'PY' || { cat "$OUT/cuda-path.txt"; fail "the gpt2 -n 50 trace is wrong (see $OUT/cuda-path.txt)"; }
import sys
import numpy as np
import phprof
from phprof.store import DEVICE_KINDS
t = phprof.load(sys.argv[1])
inf, ev, w = np.sort(t.inferences, order="index"), t.events, t.windows
dev = ev[np.isin(ev["kind"], DEVICE_KINDS)]
row = np.searchsorted(inf["index"], dev["inference"])
print("trace:", t.status, len(inf), "inferences,", len(dev), "device events, device identity", t.meta.get("device_identity"))
print("kernels per inference: min", inf["kernels"].min(), "max", inf["kernels"].max())
print("windows: kernels", w["kernels"].tolist(), "without_op", w["without_op"].tolist(), "without_inference",
      w["without_inference"].tolist(), "kernelless", w["kernelless"].tolist(), "capture_stopped", w["capture_stopped"].tolist())
after = (inf["end_ns"] - inf["cpu_end_ns"]) / 1e6
print(f"span end after the CPU span's end: {after.min():.2f} to {after.max():.2f} ms; start after the CPU start: "
      f"{((inf['start_ns'] - inf['cpu_start_ns']) / 1e6).min():.2f} to {((inf['start_ns'] - inf['cpu_start_ns']) / 1e6).max():.2f} ms")
print("Kineto said:", t.meta.get("kineto_messages") or "nothing")
print("notes:", *t.summary.get("notes", []), sep="\n  ")
ok = (t.status == "complete" and (inf["kernels"] > 0).all() and (dev["inference"] >= 0).all()
      and (dev["start_ns"] >= inf["start_ns"][row]).all() and (dev["end_ns"] <= inf["end_ns"][row]).all()
      and t.meta.get("device_identity", {}).get("matched_by") is not None)
print("the trace's kernels and spans:", "ok" if ok else "WRONG")
sys.exit(0 if ok else 1)
PY
cat "$OUT/cuda-path.txt" "$OUT/gpt2-n50.report.txt"

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
