"""A small data-parallel inference job for `torchrun ... -m phprof run` (tests/test_ranks_torchrun.py,
tools/bench_ranks.py): each rank runs the same model on its own batches and all-reduces the outputs
(gloo on the CPU). Arguments: INFERENCES [SLOW_RANK SLOW_S].

With the fake NVML (PHPROF_FAKE_NVML_STATE set), each rank's modules draw a known power on the fake
GPU of its LOCAL_RANK (tools/fake_nvml.power_per_module); the rank SLOW_RANK spends SLOW_S more in each forward, so the others wait for it in the
all-reduce. It prints rank 0's time per inference (after the first 5), the all-reduce included."""
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import phprof

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
slow_rank = int(sys.argv[2]) if len(sys.argv) > 2 else -1
slow_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

dist.init_process_group("gloo")
rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))

levels, tags = {}, {}
if os.environ.get("PHPROF_FAKE_NVML_STATE"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from fake_nvml import FakeNvml, power_per_module

    fake = FakeNvml.attach(os.environ["PHPROF_NVML_LIB"], os.environ["PHPROF_FAKE_NVML_STATE"])
    power_per_module(fake, levels, tags, device=local, dwell_s=0.002)(model)

if rank == slow_rank:
    def slower(mod, args):
        end = time.perf_counter() + slow_s
        while time.perf_counter() < end:
            pass
    model[1].register_forward_pre_hook(slower)

with torch.no_grad():
    dist.barrier()
    warm = min(5, n // 2)  # the first inferences (first calls, first all-reduce) are not timed
    for i in range(n):
        if i == warm:
            start = time.perf_counter()
        with phprof.inference():
            y = model(torch.randn(16, 64))
            dist.all_reduce(y)
    seconds = time.perf_counter() - start
if rank == 0:
    print(f"seconds per inference: {seconds / (n - warm):.6f}", flush=True)
dist.destroy_process_group()
