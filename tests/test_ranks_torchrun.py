"""`torchrun --nproc-per-node 2 -m phprof run` of a data-parallel job (gloo on this machine's CPU),
run once for the module: each rank's modules draw a known power on its own fake GPU (of 4; GPUs 2
and 3 busy with nothing), rank 1's clock is 200 ms ahead (the recorder's test-only skew) and its
forwards are slower. The rank files, their merge against the fake's truth, the clock offset
recovered, the merged Perfetto timeline read back aligned. The merge's logic on synthetic rank
files: tests/test_ranks.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import phprof
from phprof.render.ranks import RANK_TID_STRIDE
from phprof.sources import NvmlSource
from phprof.store import load
from phprof.tracing.kineto import load_kineto

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]

PROGRAM = Path(__file__).parent / "programs" / "data_parallel.py"
SKEW_NS = 200_000_000  # rank 1's clock, ahead of rank 0's
INFERENCES, SLOW_S = 30, 0.02  # rank 1 spends 20 ms more in each forward


@pytest.fixture(scope="module")
def job(fake_lib, tmp_path_factory):
    import fake_nvml

    work = tmp_path_factory.mktemp("torchrun")
    with fake_nvml.FakeNvml(fake_lib, work / "state", n_devices=4, preset="a100", seed=5) as fake:
        env = {**os.environ, **fake.env, "PHPROF_TEST_CLOCK_SKEW_NS": f"1:{SKEW_NS}", "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "phprof",
             "run", "--idle", "0.3", "--sensor-gpu", "local-rank", "-o", str(work / "dp.h5"), str(PROGRAM),
             str(INFERENCES), "1", str(SLOW_S)],
            env=env, cwd=work, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        merged = phprof.merge(work)
        t0, t1 = merged.span_ns  # rank 0's clock is the true one (its skew is 0)
        truth = {"gpus": [fake.true_energy(d, t0, t1) for d in range(4)],
                 "ranks": {r.rank: fake.true_energy(r.rank, *r.span_ns) for r in merged.ranks},
                 "uuids": [d["uuid"] for d in NvmlSource.probe(str(fake_lib)).devices]}
    return work, merged, truth, proc


def test_each_rank_writes_its_own_file_with_where_it_stands(job):
    work, merged, truth, proc = job
    files = sorted(p.name for p in work.glob("dp.rank*.h5"))
    assert files == ["dp.rank0.h5", "dp.rank1.h5"]
    metas = [load(work / f).meta for f in files]
    for r, meta in enumerate(metas):
        d = meta["distributed"]
        assert (d["rank"], d["world_size"], d["local_rank"]) == (r, 2, r) and d["host"]
        assert meta["device_ids"] == {f"gpu{r}": truth["uuids"][r]}  # the fake GPU of its local rank, by UUID
        assert [p["when"] for p in meta["clock"]["probes"]] == ["start", "end"]
    assert metas[0]["distributed"]["run_id"] == metas[1]["distributed"]["run_id"]
    assert "anti-aliasing pauses off" in proc.stderr


def test_energy_per_gpu_per_rank_and_in_total_against_the_fakes_truth(job):
    _, m, truth, _ = job
    assert not m.partial and [r.rank for r in m.ranks] == [0, 1]
    by_id = {d.id: d for d in m.devices}
    assert set(by_id) == set(truth["uuids"][:2])  # GPUs 2 and 3 ran nothing of this job: not in its energy
    for k in (0, 1):
        e = by_id[truth["uuids"][k]].energy
        assert e.measured and e.low_j <= truth["gpus"][k] <= e.high_j, (k, e, truth["gpus"][k])
        r = m.ranks[k].energy
        assert r.low_j <= truth["ranks"][k] <= r.high_j, (k, r, truth["ranks"][k])
    total, true_total = m.total, sum(truth["gpus"][:2])
    assert total.low_j <= true_total <= total.high_j
    assert true_total + min(truth["gpus"][2:]) > total.high_j  # an idle GPU counted in would show


def test_communication_the_slowest_rank_and_its_waiting(job):
    _, m, _, _ = job
    assert all(r.communication_s > 0 for r in m.ranks) and m.communication_s > 0
    assert m.communication_j is not None and m.communication_j > 0
    assert m.slowest == 1
    # rank 0 waits for rank 1's 20 ms more per forward at the all-reduce; rank 1 hardly waits (loose
    # bounds: on a busy machine either rank may be held up by other work as well)
    assert m.ranks[0].waiting_s > 0.5 * INFERENCES * SLOW_S > m.ranks[1].waiting_s
    assert m.waiting_s == m.ranks[1].causes_s > 3 * m.ranks[0].causes_s
    text = phprof.render(m, "text")
    assert "slowest rank 1" in text and "Communication (NCCL, gloo collectives)" in text


def test_the_injected_clock_offset_is_recovered_within_1_ms(job):
    _, m, _, _ = job
    r1 = m.ranks[1]
    assert len(r1.clock.offsets_ns) == 2
    for offset in r1.clock.offsets_ns:  # the true offset is the skew: the ranks share the host's clock
        assert abs(offset - SKEW_NS) < 1_000_000, r1.clock
        assert abs(offset - SKEW_NS) <= r1.clock.uncertainty_ns, r1.clock  # within the bound it states
    assert m.clock_uncertainty_ns == r1.clock.uncertainty_ns > 0


def test_the_merged_perfetto_timeline_loads_back_with_the_ranks_aligned(job, tmp_path):
    work, m, _, _ = job
    path = phprof.render(m, tmp_path / "job.perfetto.json")
    doc = json.loads(path.read_text())
    assert doc["distributedInfo"] == {"backend": "gloo", "rank": 0, "world_size": 2}
    processes = [e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert sum(p.startswith("rank ") for p in processes) == 2 and sum(p.startswith("power ") for p in processes) == 2
    k = load_kineto(path)
    names = np.array(k.names, dtype=object)[k.events["name"]].astype(str)
    rank = k.events["stream"] // RANK_TID_STRIDE

    def per_rank(mask, key):
        return {r: np.sort(k.events[key][mask & (rank == r)]) for r in (0, 1)}

    ends = per_rank(np.char.startswith(names, "phprof.inference."), "end_ns")
    arrivals = per_rank(names == "c10d::allreduce_", "start_ns")
    assert all(len(ends[r]) == len(arrivals[r]) == INFERENCES for r in (0, 1))
    # causality, whatever the machine's load: no rank's all-reduce (so its inference) ends before
    # every rank has arrived at it. Unaligned, rank 1's arrivals would lie 200 ms after rank 0's ends.
    u = m.clock_uncertainty_ns
    for a, b in ((0, 1), (1, 0)):
        early = ends[a] - arrivals[b]
        assert early.min() >= -u, (a, b, np.sort(early)[:5], u)
    raw = load(work / "dp.rank1.h5")  # rank 1's own stamps, not aligned: the same test fails
    own = np.sort(raw.events["start_ns"][np.array(raw.strings, dtype=object)[raw.events["name"]] == "c10d::allreduce_"])
    assert (ends[0] - own).min() < -u

