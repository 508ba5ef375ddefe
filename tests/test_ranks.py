"""Rank files merged (phprof.attribution.ranks, phprof.merge): synthetic rank files written through
the store, each with an energy counter's readings of a known power, inferences, collectives and
clock probes. A GPU two ranks measure is counted once; clocks are aligned by the probes; files of
different runs, a rank twice, a missing rank. The torchrun job itself: tests/test_ranks_torchrun.py."""
from __future__ import annotations

import numpy as np
import pytest

import phprof
from phprof.attribution.ranks import RankMergeError, merge
from phprof.sources import Channel, PowerLog
from phprof.sources.base import READING_DTYPE
from phprof.store import TraceWriter, load
from phprof.store.schema import EVENT_DTYPE, INFERENCE_DTYPE, Kind, run_meta
from phprof.tracing.ranks import detect, rank_output, skew_ns

MS = 1_000_000
T0 = 1_800_000_000 * 10**9  # the job's first instant, on rank 0's clock
W_OF = {"GPU-a": 300.0, "GPU-b": 150.0}  # true power of each physical GPU, constant


def _energy_j(uuid: str, t0: int, t1: int) -> float:
    return W_OF[uuid] * (t1 - t0) / 1e9


def _rank_file(path, rank, world=2, uuid="GPU-a", skew=0, run_id="10.0.0.1:29500", host="node0", start=0,
               n=10, step=20 * MS, comm=5 * MS, probes=True, period=MS):
    """A rank's file: its stamps ``skew`` ns ahead of rank 0's clock; an energy counter
    (mJ) of ``uuid`` updated every ``period``; ``n`` inferences of ``step`` from ``start``,
    each ending in a collective of ``comm``."""
    meta = run_meta(model="synthetic", task="", device="cpu", device_name="", versions={},
                    sensor={"source": "nvml", "devices": {"gpu0": "Fake GPU"}},
                    device_ids={"gpu0": uuid},
                    distributed={"rank": rank, "world_size": world, "local_rank": rank, "local_world_size": world,
                                 "host": host, "run_id": run_id, "run_id_from": "MASTER_ADDR:MASTER_PORT"})
    w = TraceWriter(path, meta)
    a, b = T0 + start - 100 * MS, T0 + start + n * step + 100 * MS  # readings from before to after the inferences
    t = np.arange(a, b, period)
    r = np.zeros(len(t), READING_DTYPE)
    r["t_before_ns"], r["t_after_ns"] = t + skew, t + skew + 1000
    r["value"] = np.floor(W_OF[uuid] * (t - T0 + 10**9) / 1e6)  # mJ since a second before the job
    r["seq"] = np.arange(len(t))
    log = PowerLog("nvml", (Channel("gpu0.energy", "gpu0", "energy", "mJ", "test counter"),), r)
    w.append_power(log)
    starts = T0 + start + np.arange(n) * step + skew
    inf = np.zeros(n, INFERENCE_DTYPE)
    inf["index"], inf["start_ns"], inf["end_ns"] = np.arange(n), starts, starts + step - MS
    w.append_strings(["c10d::allreduce_", "gloo:all_reduce", "aten::addmm"])
    ev = np.zeros(3 * n, EVENT_DTYPE)
    for i in range(n):
        end = inf["end_ns"][i]
        ev[3 * i] = (inf["start_ns"][i], end - comm, 3, 0, i, -1, 1, -1, Kind.CPU_OP)
        ev[3 * i + 1] = (end - comm, end, 1, 0, i, -1, 1, -1, Kind.CPU_OP)
        ev[3 * i + 2] = (end - comm + 1000, end - 1000, 2, 0, i, -1, 1, -1, Kind.CPU_OP)  # inside the c10d op
    w.append_window(ev, inf, np.zeros(0, np.dtype([("inference", "<i4"), ("name", "<u4"), ("start_ns", "<i8"),
                                                   ("end_ns", "<i8")])), (0, 0, n - 1, starts[0], inf["end_ns"][-1],
                                                                          len(ev)))
    if probes:
        at = [int(T0 + skew), int(T0 + start + n * step + skew)]
        w.update_meta({"clock": {"reference_rank": 0, "failed": [], "probes": [
            {"when": when, "at_ns": a_ns, "offset_ns": skew, "uncertainty_ns": 50_000 if rank else 0,
             "round_trips": 16, "backend": "gloo", "reference_start_ns": T0}
            for when, a_ns in zip(("start", "end"), at)]}})
    w.close("complete", {})
    return path


def _merged(paths):
    return merge([(load(p), None) for p in paths])


def test_two_ranks_on_two_gpus_each_counted_over_the_jobs_span(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0, uuid="GPU-a")
    b = _rank_file(tmp_path / "j.rank1.h5", 1, uuid="GPU-b", start=3 * MS)
    m = _merged([a, b])
    assert not m.partial and m.world_size == 2 and [r.rank for r in m.ranks] == [0, 1]
    t0, t1 = m.span_ns
    assert (t0, t1) == (T0, T0 + 3 * MS + 10 * 20 * MS - MS)
    by_id = {d.id: d for d in m.devices}
    assert set(by_id) == {"GPU-a", "GPU-b"}
    for uuid, d in by_id.items():
        truth = _energy_j(uuid, t0, t1)
        assert d.energy.low_j <= truth <= d.energy.high_j and d.energy.measured, (uuid, d.energy, truth)
    truth = _energy_j("GPU-a", t0, t1) + _energy_j("GPU-b", t0, t1)
    assert m.total.low_j <= truth <= m.total.high_j
    assert m.ranks[0].communication_s == pytest.approx(10 * 5 * MS / 1e9)  # the gloo op inside counts once


def test_a_gpu_two_ranks_measure_is_counted_once(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0, uuid="GPU-a")
    b = _rank_file(tmp_path / "j.rank1.h5", 1, uuid="GPU-a", start=7 * MS, skew=40 * MS)
    m = _merged([a, b])
    (d,) = m.devices
    assert d.id == "GPU-a" and d.ranks == (0, 1) and d.uncovered_s == 0
    t0, t1 = m.span_ns
    truth = _energy_j("GPU-a", t0, t1)
    assert d.energy.low_j <= truth <= d.energy.high_j
    assert m.total.joules == pytest.approx(truth, rel=0.01)  # doubled would be 2x
    per_rank = sum(r.energy.joules for r in m.ranks)
    assert per_rank > 1.9 * truth  # each rank's own row holds the whole GPU: the rows do not add up
    assert any("counted once" in n and "GPU-a" in n for n in m.notes)


def test_a_nodes_cpu_seen_by_every_rank_is_counted_once(tmp_path):
    """The host's CPU package has one id on every rank of the host (phprof.sources: host/device)."""
    a = _rank_file(tmp_path / "j.rank0.h5", 0, uuid="GPU-b")
    b = _rank_file(tmp_path / "j.rank1.h5", 1, uuid="GPU-b")
    for p in (a, b):  # the same counter, named as a RAPL package of node0 is
        import h5py

        with h5py.File(p, "a") as f:
            f["meta"].attrs["device_ids"] = '{"gpu0": "node0/package-0"}'
    m = _merged([a, b])
    assert [d.id for d in m.devices] == ["node0/package-0"]


def test_the_clock_offsets_align_the_ranks(tmp_path):
    skew = 250 * MS
    a = _rank_file(tmp_path / "j.rank0.h5", 0)
    b = _rank_file(tmp_path / "j.rank1.h5", 1, uuid="GPU-b", skew=skew)
    m = _merged([a, b])
    r1 = m.ranks[1]
    assert r1.clock.offsets_ns == (skew, skew) and r1.clock.uncertainty_ns == 50_000
    assert r1.span_ns[0] == T0  # on rank 0's clock: no longer 250 ms late
    assert m.clock_uncertainty_ns == 50_000
    text = phprof.render(m, "text")
    assert "within +-0.050 ms" in text and "250.000 ms" in text


def test_the_slowest_rank_and_the_waiting_it_causes(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0, comm=8 * MS)  # waits 8 ms per inference
    b = _rank_file(tmp_path / "j.rank1.h5", 1, uuid="GPU-b", comm=2 * MS)
    m = _merged([a, b])
    assert m.slowest == 1
    assert m.ranks[0].waiting_s == pytest.approx(10 * 6 * MS / 1e9) and m.ranks[1].waiting_s == 0
    assert m.waiting_s == pytest.approx(0.06)


def test_files_of_different_runs_are_an_error(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0)
    b = _rank_file(tmp_path / "k.rank1.h5", 1, run_id="10.0.0.2:29500")
    with pytest.raises(RankMergeError, match=r"of 2 different runs .*10\.0\.0\.2"):
        _merged([a, b])


def test_the_same_address_later_is_another_run_once_a_probe_says_so(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0)
    b = _rank_file(tmp_path / "k.rank1.h5", 1)
    import h5py

    with h5py.File(b, "a") as f:  # rank 0 of another launch on the same address started elsewhen
        f["meta"].attrs["clock"] = f["meta"].attrs["clock"].replace(str(T0), str(T0 + 5 * 10**9))
    with pytest.raises(RankMergeError, match="different runs"):
        _merged([a, b])


def test_a_rank_twice_is_an_error(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0)
    b = _rank_file(tmp_path / "copy.rank0.h5", 0)
    with pytest.raises(RankMergeError, match="rank 0 twice"):
        _merged([a, b])


def test_a_missing_rank_is_a_labelled_partial_merge(tmp_path):
    a = _rank_file(tmp_path / "j.rank0.h5", 0, world=3)
    b = _rank_file(tmp_path / "j.rank1.h5", 1, world=3, uuid="GPU-b")
    m = _merged([a, b])
    assert m.partial and m.missing == [2]
    assert phprof.render(m, "text").startswith("PARTIAL Merged run")
    assert any(n.startswith("PARTIAL: 1 of 3 ranks") for n in m.notes)


def test_a_file_of_no_rank_is_an_error(tmp_path):
    import h5py

    a = _rank_file(tmp_path / "j.rank0.h5", 0)
    b = _rank_file(tmp_path / "single.h5", 1)
    with h5py.File(b, "a") as f:
        del f["meta"].attrs["distributed"]
    with pytest.raises(RankMergeError, match="single.h5 is not a rank's file"):
        _merged([a, b])


def test_rank_files_are_found_in_a_folder_or_by_a_glob(tmp_path):
    for r in (1, 0):
        _rank_file(tmp_path / f"j.rank{r}.h5", r)
    (tmp_path / "other.h5").write_bytes(b"")
    assert [p.name for p in phprof.rank_files(tmp_path)] == ["j.rank0.h5", "j.rank1.h5"]
    assert [p.name for p in phprof.rank_files(str(tmp_path / "j.rank*.h5"))] == ["j.rank0.h5", "j.rank1.h5"]
    with pytest.raises(phprof.errors.OptionError, match="matches no file"):
        phprof.rank_files(str(tmp_path / "none.rank*.h5"))


def test_the_launchers_environment_names_the_rank_and_its_file():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500",
           "TORCHELASTIC_RUN_ID": "none"}
    r = detect(env)
    assert (r.rank, r.world_size, r.local_rank, r.run_id, r.run_id_from) == (1, 2, 1, "h:29500",
                                                                              "MASTER_ADDR:MASTER_PORT")
    assert detect({**env, "TORCHELASTIC_RUN_ID": "job7"}).run_id == "job7"
    assert detect({}) is None
    from pathlib import Path

    assert rank_output(Path("out/run.h5"), 3) == Path("out/run.rank3.h5")
    assert rank_output(Path("run"), 0) == Path("run.rank0.h5")
    assert skew_ns({"PHPROF_TEST_CLOCK_SKEW_NS": "1:500", "RANK": "1"}) == 500
    assert skew_ns({"PHPROF_TEST_CLOCK_SKEW_NS": "1:500", "RANK": "0"}) == 0


def test_a_session_under_a_launcher_writes_its_ranks_file(tmp_path, monkeypatch):
    """In this process, with the launcher's environment and no process group: the file's name and
    /meta, the anti-aliasing pauses off, and the summary says no clock was measured."""
    import torch

    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    model = torch.nn.Linear(4, 4)
    with phprof.profile(tmp_path / "job.h5", gpus=None, source="none", idle_s=0) as prof:
        for _ in range(2):
            model(torch.randn(2, 4))
    assert prof.summary.path == tmp_path / "job.rank1.h5"
    meta = load(tmp_path / "job.rank1.h5").meta
    assert meta["distributed"]["rank"] == 1 and meta["distributed"]["run_id"] == "127.0.0.1:29999"
    assert meta["options"]["anti_alias"] is False and "clock" not in meta
    notes = " ".join(prof.summary.notes)
    assert "anti-aliasing pauses off" in notes and "no clock probe" in notes
