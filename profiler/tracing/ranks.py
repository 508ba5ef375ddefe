"""A recording that is one rank of a distributed job (``torchrun``, ``torch.distributed.run``).

A launcher tells each process where it stands through the environment:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``, ``TORCHELASTIC_RUN_ID``). :func:`detect`
reads it; a session that finds one writes its own file,
``NAME.rank<r>.h5`` (:func:`rank_output`), with the rank, the world size, the
local rank, the host and a run id the ranks share, so that the merge
(``phprof.attribution.ranks``) can tell the files of one job from another's.

Clocks. Every time in a trace file is the host's CLOCK_REALTIME; hosts' clocks
differ. Once the program has a process group (its ``init_process_group``
returns) and again before it destroys it (or at the end of the recording), each
rank measures its clock's offset to rank 0's through the group
(:func:`measure_offset`): a few round trips ``t0`` (rank 0) -> ``t1`` (rank r)
-> ``t2`` (rank 0); the round trip with the shortest time gives the offset
``t1 - (t0 + t2) / 2`` with the bound ``(t2 - t0) / 2``: rank r's stamp was
taken between rank 0's two, so the true offset lies within it whatever the
delays each way.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROUND_TRIPS = 64  # per probe and peer: the shortest one is kept (a busy host delays most)
MEET_S = 10.0  # how long a rank waits for the others at a probe before it goes without
#: test-only: nanoseconds added to every stamp this process records (its power
#: readings, its profiler events and its clock probes), a clock that is off by that
#: much: ``NS`` for every process, ``R:NS`` for the rank R only (a launcher gives
#: every rank the same environment)
SKEW_ENV = "PHPROF_TEST_CLOCK_SKEW_NS"


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in its job, as the launcher said."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int | None
    host: str
    run_id: str  # shared by the ranks of one launch; see detect()
    run_id_from: str  # what the run id was taken from

    def as_meta(self) -> dict:
        return asdict(self)


def detect(env=None) -> RankInfo | None:
    """The rank this process is, from the launcher's environment; None outside a
    distributed launch (no RANK and WORLD_SIZE). The run id is the launcher's
    ``TORCHELASTIC_RUN_ID`` when it sets one (torchrun ``--rdzv-id``, or a random
    one with ``--standalone``), else the rendezvous address
    ``MASTER_ADDR:MASTER_PORT``, to which the first clock probe adds rank 0's
    start (:func:`confirmed_run_id`)."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", env["RANK"]))
        local_world = int(env["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in env else None
    except ValueError:
        return None
    elastic = env.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic != "none":
        run_id, source = elastic, "TORCHELASTIC_RUN_ID"
    else:
        run_id = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
        source = "MASTER_ADDR:MASTER_PORT"
    return RankInfo(rank, world, local, local_world, platform.node(), run_id, source)


def rank_output(path: Path, rank: int) -> Path:
    """``run.h5`` -> ``run.rank<r>.h5``: one output name given, each rank its own file."""
    path = Path(path)
    suffix = path.suffix if path.suffix == ".h5" else ""
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}.rank{rank}{suffix or '.h5'}")


def skew_ns(env=None) -> int:
    """The test-only clock skew of this process (0 unless the test sets :data:`SKEW_ENV`)."""
    env = os.environ if env is None else env
    text = env.get(SKEW_ENV, "").strip()
    if not text:
        return 0
    rank, _, ns = text.rpartition(":")
    return int(ns) if not rank or rank == env.get("RANK") else 0


@dataclass(frozen=True)
class ClockProbe:
    """This rank's clock against rank 0's at one moment: ``offset_ns`` (this
    clock minus rank 0's), within +-``uncertainty_ns``."""

    when: str  # start | end
    at_ns: int  # on this rank's clock
    offset_ns: int
    uncertainty_ns: int
    round_trips: int
    backend: str
    reference_start_ns: int  # rank 0's recording start, on its clock (the run id's second part)

    def as_meta(self) -> dict:
        return asdict(self)


def process_group():
    """``torch.distributed`` when it has a process group initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


class ProbeSkipped(RuntimeError):
    """Not every rank came to the probe: it is not taken."""


def _meet(dist, tag: str, timeout_s: float) -> None:
    """Every rank of the group announces itself in the group's store under ``tag``
    and waits for the others; ProbeSkipped after ``timeout_s`` (a rank that is not
    recorded, or that failed, never comes: the send/recv of the probe would hang)."""
    from datetime import timedelta

    store = dist.distributed_c10d._get_default_store()
    rank, world = dist.get_rank(), dist.get_world_size()
    store.set(f"phprof.clock.{tag}.{rank}", "1")
    try:
        store.wait([f"phprof.clock.{tag}.{r}" for r in range(world)], timedelta(seconds=timeout_s))
    except RuntimeError:  # the store's timeout (DistStoreError is one)
        raise ProbeSkipped(f"not every rank came to the probe within {timeout_s:.0f} s (a rank not recorded by "
                           "phprof, or one that failed)") from None


def measure_offset(when: str, clock=time.time_ns, reference_start_ns: int = 0,
                   round_trips: int = ROUND_TRIPS, tag: str | None = None,
                   meet_s: float = MEET_S) -> ClockProbe | None:
    """Every rank's offset to rank 0, through the process group (a collective:
    every rank calls it at the same point of the program; the ranks meet first in the
    group's store, under ``tag``, so that a rank alone is told so instead of hanging);
    None without a group. ``clock``: this rank's clock (ns); ``reference_start_ns``:
    rank 0 sends its own."""
    dist = process_group()
    if dist is None:
        return None
    import torch

    _meet(dist, tag or when, meet_s)

    rank, world = dist.get_rank(), dist.get_world_size()
    backend = str(dist.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    buf = torch.zeros(2, dtype=torch.int64, device=device)
    answer = torch.zeros(3, dtype=torch.int64, device=device)  # offset, uncertainty, rank 0's start
    at = clock()
    if rank == 0:
        for peer in range(1, world):
            best = None
            for _ in range(round_trips):
                t0 = clock()
                buf[0] = t0
                dist.send(buf, peer)
                dist.recv(buf, peer)
                t2 = clock()
                t1 = int(buf[1])
                trip = (t2 - t0, t1 - (t0 + t2) // 2)
                best = trip if best is None or trip[0] < best[0] else best
            answer[0], answer[1], answer[2] = best[1], (best[0] + 1) // 2, int(reference_start_ns)
            dist.send(answer, peer)
        return ClockProbe(when, at, 0, 0, round_trips, backend, int(reference_start_ns))
    for _ in range(round_trips):
        dist.recv(buf, 0)
        buf[1] = clock()
        dist.send(buf, 0)
    dist.recv(answer, 0)
    offset, uncertainty, start = (int(v) for v in answer.tolist())
    return ClockProbe(when, at, offset, uncertainty, round_trips, backend, start)


class ClockProbes:
    """The probes of one session: after the program's ``init_process_group``
    returns (or at the session's start when a group exists already), before its
    ``destroy_process_group``, and at the session's end when the group is still
    there and no end probe was taken. ``clock``: the session's clock."""

    def __init__(self, clock, started_ns) -> None:
        self.clock, self.started_ns = clock, started_ns  # started_ns(): the recording's start, this clock
        self.probes: list[ClockProbe] = []
        self.failed: list[str] = []
        self._tried = 0
        self._saved: dict[str, object] = {}

    def install(self) -> None:
        try:
            import torch.distributed as dist
        except ImportError:
            return
        if not dist.is_available():
            return
        init, destroy = dist.init_process_group, dist.destroy_process_group
        self._saved = {"init_process_group": init, "destroy_process_group": destroy}

        def init_process_group(*args, **kwargs):
            out = init(*args, **kwargs)
            self.take("start")
            return out

        def destroy_process_group(*args, **kwargs):
            if not args and kwargs.get("group") is None and not self._has("end"):
                self.take("end")
            return destroy(*args, **kwargs)

        dist.init_process_group, dist.destroy_process_group = init_process_group, destroy_process_group
        if dist.is_initialized():
            self.take("start")

    def remove(self) -> None:
        if self._saved:
            import torch.distributed as dist

            for name, fn in self._saved.items():
                setattr(dist, name, fn)
            self._saved = {}

    def _has(self, when: str) -> bool:
        return any(p.when == when for p in self.probes)

    def take(self, when: str) -> None:
        self._tried += 1
        try:
            probe = measure_offset(when, self.clock, self.started_ns(), tag=f"{when}.{self._tried}")
        except (RuntimeError, ValueError) as e:  # a peer gone or never there, a backend without send/recv
            self.failed.append(f"{when}: {e}".splitlines()[0])
            return
        if probe is not None:
            self.probes.append(probe)

    def at_end(self, complete: bool) -> None:
        """At the session's end: the end probe, if the group is still there (only
        when the run ended whole: a rank that failed would leave its peers waiting)."""
        if complete and not self._has("end") and process_group() is not None:
            self.take("end")

    def as_meta(self) -> dict:
        return {"reference_rank": 0, "probes": [p.as_meta() for p in self.probes], "failed": self.failed}
