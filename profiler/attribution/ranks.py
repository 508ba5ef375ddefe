"""The rank files of one distributed job, merged: energy counted once per physical device.

Each rank of a job records its own file (``phprof.tracing.ranks``): its
inferences and events on its host's clock, the readings of the devices it
measured, each device's physical identity (a GPU's UUID as NVML reports it; a
host's CPU package or DRAM as ``host/device``), and its clock's offset to rank
0's. :func:`merge` puts them on rank 0's clock and says

* per physical device: its energy over the job's span (the first inference of
  any rank to the last one's end), read off its counter once, however many
  ranks measured it (their readings are not added: each piece of the span is
  read from one rank's readings, the one that covers it);
* per rank: its inferences, its time, its time in communication (NCCL, gloo
  collectives: :func:`is_communication`), its devices' energy over its own span
  (a device shared with another rank is in both rows: the rank rows do not add
  up; the devices' rows do);
* the slowest rank and the waiting it causes: the k-th collective of every rank
  is the same collective (as in any SPMD program); the last rank to arrive at it
  (on rank 0's clock) holds the others until it does, so each rank's wait there
  is the last one's arrival less its own, and the waiting the last one causes is
  the others' waits added up; the slowest rank causes the most (an estimate,
  within the clocks' bounds). A collective in the first inference after one of
  phprof's window saves on any rank is left out: there the rank that waits is
  held by phprof, not by the program (that waiting is given apart);
* the clocks: each rank's offset to rank 0 and how sure it is.

Bad input is a :class:`RankMergeError`: files of different runs, a rank
twice, a file that is no rank's. A missing rank is merged, labelled partial.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import PhprofError
from ..sources import Measurement, add_measurements
from ..store import Trace
from ..store.results import Role

#: what a communication op or kernel is called: NCCL kernels, gloo and c10d ops, torch's comms records
COMMUNICATION = re.compile(r"^(nccl|gloo:|c10d::|record_param_comms|ncclDevKernel|ncclKernel)", re.I)


class RankMergeError(PhprofError):
    """Rank files that cannot be merged: of different runs, a rank twice, not rank files."""


def is_communication(name: str) -> bool:
    return bool(COMMUNICATION.match(name))


@dataclass(frozen=True)
class Clock:
    """How a rank's stamps are put on rank 0's clock: ``t0 = t - offset(t)``."""

    at_ns: tuple[int, ...]  # on the rank's clock, where the offsets were measured
    offsets_ns: tuple[int, ...]
    uncertainty_ns: int | None  # None: not measured
    how: str

    def offset_at(self, t_ns) -> np.ndarray:
        """The offset (ns) at the rank's own instants ``t_ns``: linear between the
        probes, the nearest probe's beyond them."""
        t = np.asarray(t_ns, np.int64)
        if len(self.at_ns) < 2:
            return np.full(t.shape, self.offsets_ns[0] if self.offsets_ns else 0, np.int64)
        return np.rint(np.interp(t.astype(np.float64), self.at_ns, self.offsets_ns)).astype(np.int64)

    def to_reference(self, t_ns) -> np.ndarray:
        t = np.asarray(t_ns, np.int64)
        return t - self.offset_at(t)

    @property
    def drift_ns(self) -> int:
        return int(self.offsets_ns[-1] - self.offsets_ns[0]) if len(self.offsets_ns) > 1 else 0


@dataclass(frozen=True)
class RankRow:
    rank: int
    host: str
    local_rank: int
    path: str
    devices: dict  # power device name in its file -> physical id
    inferences: int
    inference_s: float
    span_ns: tuple[int, int]  # first inference's start, last one's end, on rank 0's clock
    communication_s: float  # in collectives, inside inferences
    communication_j: float | None  # estimated: its time at the power of the layers it ran in
    energy: Measurement | None  # its devices over its own span
    clock: Clock
    waiting_s: float = 0.0  # its waits for the last rank to arrive at each collective
    causes_s: float = 0.0  # the others' waits at the collectives it arrived at last

    @property
    def seconds_per_inference(self) -> float:
        return self.inference_s / self.inferences if self.inferences else float("nan")



@dataclass(frozen=True)
class DeviceRow:
    """One physical device, counted once."""

    id: str  # the GPU's UUID, or host/device
    name: str
    ranks: tuple[int, ...]  # the ranks that measured it
    energy: Measurement  # over the job's span
    read_from: tuple[int, ...]  # the ranks whose readings the energy was read from
    uncovered_s: float = 0.0  # of the job's span, no rank's readings of it cover this much


@dataclass
class MergedRun:
    """Rank files of one job, merged (see the module's docstring)."""

    run_id: str
    world_size: int
    backend: str
    ranks: list[RankRow]
    devices: list[DeviceRow]
    span_ns: tuple[int, int]  # the job's: on rank 0's clock
    missing: list[int]  # ranks of the world without a file: a partial merge
    slowest: int | None
    waiting_s: float  # the waiting the slowest rank causes, summed over the others
    communication_s: float
    communication_j: float | None
    profiler_waiting_s: float = 0.0  # the ranks' waits at collectives right after a rank's window save
    notes: list[str] = field(default_factory=list)
    traces: dict = field(default_factory=dict, repr=False)  # rank -> its Trace on rank 0's clock (the timeline)

    VIEW = "ranks"

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def total(self) -> Measurement | None:
        """The devices' energies added up: each physical device once."""
        if not self.devices:
            return None
        return add_measurements([d.energy for d in self.devices], "+".join(d.id for d in self.devices),
                                (self.span_ns[1] - self.span_ns[0]) / 1e9)

    @property
    def clock_uncertainty_ns(self) -> int | None:
        """The widest of the ranks' offset bounds; None where a rank's is unknown."""
        u = [r.clock.uncertainty_ns for r in self.ranks]
        return None if any(x is None for x in u) else max(u, default=0)


# ------------------------------------------------------------------------------- the merge


def distributed_of(t: Trace) -> dict:
    """A file's rank, world, host and run id (``RankMergeError`` for a file that is no rank's)."""
    d = t.meta.get("distributed")
    if not d:
        raise RankMergeError(f"{t.path} is not a rank's file (recorded without a launcher's RANK and WORLD_SIZE): "
                             "merge only the files of one torchrun job")
    return d


def _run_id(d: dict, t: Trace) -> str:
    """The run id, with rank 0's start once a clock probe confirmed it (an id from the
    rendezvous address alone is shared by every launch on that address)."""
    if d.get("run_id_from") == "TORCHELASTIC_RUN_ID":
        return d["run_id"]
    probes = (t.meta.get("clock") or {}).get("probes") or []
    start = next((p["reference_start_ns"] for p in probes if p.get("reference_start_ns")), None)
    return f"{d['run_id']}@{start}" if start else d["run_id"]


def clock_of(t: Trace, same_host_as_reference: bool) -> Clock:
    probes = sorted((t.meta.get("clock") or {}).get("probes") or [], key=lambda p: p["at_ns"])
    if probes:
        rank0 = distributed_of(t)["rank"] == 0
        u = max(int(p["uncertainty_ns"]) for p in probes)
        how = "rank 0's own clock" if rank0 else (
            f"measured through {probes[0]['backend']} ({'start and end' if len(probes) > 1 else probes[0]['when']}, "
            f"{probes[0]['round_trips']} round trips each, the shortest kept)")
        return Clock(tuple(int(p["at_ns"]) for p in probes), tuple(int(p["offset_ns"]) for p in probes), u, how)
    if same_host_as_reference:
        return Clock((), (), None, "not measured (no process group): rank 0's host, its clock taken as the same")
    return Clock((), (), None, "not measured (no process group) on another host: its events are not aligned")


def merge(runs: list[tuple[Trace, object]]) -> MergedRun:
    """``runs``: each rank file's trace and its results (``phprof.store.results.Results``,
    or None); see the module's docstring."""
    if not runs:
        raise RankMergeError("no rank files to merge")
    by_rank: dict[int, tuple[Trace, object]] = {}
    ids: dict[str, list[str]] = {}
    worlds = set()
    for t, _ in runs:
        d = distributed_of(t)
        ids.setdefault(_run_id(d, t), []).append(t.path.name)
        worlds.add(int(d["world_size"]))
    if len(ids) > 1:
        listed = "; ".join(f"run {k}: {', '.join(v)}" for k, v in ids.items())
        raise RankMergeError(f"the files are of {len(ids)} different runs ({listed})")
    for t, r in runs:
        rank = int(distributed_of(t)["rank"])
        if rank in by_rank:
            raise RankMergeError(f"rank {rank} twice: {by_rank[rank][0].path} and {t.path} (give the files of one run, "
                                 "each rank once)")
        by_rank[rank] = (t, r)
    if len(worlds) > 1:
        raise RankMergeError(f"the files disagree on the world size ({', '.join(map(str, sorted(worlds)))})")
    world = worlds.pop()
    missing = [k for k in range(world) if k not in by_rank]
    notes: list[str] = []
    run_id = next(iter(ids))
    if "@" not in run_id and all(distributed_of(t).get("run_id_from") != "TORCHELASTIC_RUN_ID" for t, _ in runs):
        notes.append(f"the run id is the rendezvous address only ({run_id}), no clock probe confirmed it: files of "
                     "two launches on that address would not be told apart")
    if missing:
        notes.append(f"PARTIAL: {len(missing)} of {world} ranks have no file here (rank "
                     f"{', '.join(map(str, missing))}): their devices and time are not in this merge")
    ref_host = distributed_of(by_rank[min(by_rank)][0])["host"]
    if 0 not in by_rank:
        notes.append("rank 0's file is missing: offsets are to its clock, which no file here holds")

    clocks = {k: clock_of(t, distributed_of(t)["host"] == ref_host) for k, (t, _) in by_rank.items()}
    rows, logs, traces = [], {}, {}
    for k in sorted(by_rank):
        t, r = by_rank[k]
        traces[k] = aligned(t, clocks[k])
        rows.append(_rank_row(k, t, r, clocks[k]))
        logs[k] = traces[k].all_power()
    spans = [row.span_ns for row in rows if row.inferences]
    span = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0, 0)
    devices = _device_rows(by_rank, rows, logs, span, notes)

    rows, slowest, waiting, held = _waiting(rows, traces, notes)
    comm_j = [row.communication_j for row in rows]
    backend = next((p["backend"] for t, _ in by_rank.values()
                    for p in (t.meta.get("clock") or {}).get("probes") or []), "")
    unaligned = [row.rank for row in rows if row.clock.uncertainty_ns is None and row.host != ref_host]
    if unaligned:
        notes.append(f"ranks {', '.join(map(str, unaligned))} ran on other hosts with no clock probe: their times "
                     "are on their own clocks, not aligned")
    shared = [d for d in devices if len(d.ranks) > 1]
    if shared:
        notes.append("devices measured by several ranks are counted once in the total: "
                     + "; ".join(f"{d.id} (ranks {', '.join(map(str, d.ranks))})" for d in shared)
                     + ". Each of those ranks' own rows and layers hold that device's whole draw during their "
                     "time: they do not add up")
    return MergedRun(str(run_id), world, backend, rows, devices, span, missing, slowest, waiting,
                     sum(row.communication_s for row in rows),
                     None if any(j is None for j in comm_j) else float(sum(comm_j)), held, notes, traces)


def _waiting(rows: list[RankRow], traces: dict, notes: list[str]):
    """Each rank's waits at the collectives, what each causes, and the slowest rank
    (see the module's docstring; ``traces``: on rank 0's clock): (rows, slowest rank or None, the waiting it causes, s,
    the waits at collectives held by a window save, s)."""
    from dataclasses import replace

    arrivals, after_save = {}, {}
    for row in rows:
        t = traces[row.rank]
        ev = communication_events(t)
        ev = ev[ev["device"] < 0] if (ev["device"] < 0).any() else ev  # the host's calls, where it has them
        ev = ev[np.argsort(ev["start_ns"], kind="stable")]
        arrivals[row.rank] = ev["start_ns"]  # the traces are on rank 0's clock
        firsts = t.windows["first_inference"][1:] if len(t.windows) else np.zeros(0, np.int64)
        after_save[row.rank] = np.isin(ev["inference"], firsts)
    counts = {len(a) for a in arrivals.values()}
    n = min(counts, default=0)
    if len(rows) < 2 or n == 0:
        return rows, None, 0.0, 0.0
    if len(counts) > 1:
        notes.append(f"the ranks made different numbers of collectives ({', '.join(map(str, sorted(counts)))}): "
                     f"their first {n} are matched in order for the waiting")
    ranks = [row.rank for row in rows]
    starts = np.stack([arrivals[r][:n] for r in ranks])  # rank x collective
    held = np.stack([after_save[r][:n] for r in ranks]).any(axis=0)  # a rank saved a window just before
    waits = (starts.max(axis=0) - starts) / 1e9
    causes = np.zeros(len(ranks))
    np.add.at(causes, starts.argmax(axis=0)[~held], waits[:, ~held].sum(axis=0))
    rows = [replace(row, waiting_s=float(waits[i, ~held].sum()), causes_s=float(causes[i]))
            for i, row in enumerate(rows)]
    by_saves = float(waits[:, held].sum())
    if by_saves:
        notes.append(f"{by_saves:.3f} s of waiting at {int(held.sum())} collectives right after a rank saved a "
                     "profiler window (phprof's own pause, not the program's) is left out of the ranks' waits")
    slow = int(np.argmax(causes))
    if causes[slow] <= 0:  # every collective reached at once: no rank held the others
        return rows, None, 0.0, by_saves
    return rows, ranks[slow], float(causes[slow]), by_saves


def _rank_row(rank: int, t: Trace, r, clock: Clock) -> RankRow:
    d = distributed_of(t)
    inf = t.inferences
    inference_s = float((inf["end_ns"] - inf["start_ns"]).sum()) / 1e9 if len(inf) else 0.0
    own = (int(inf["start_ns"].min()), int(inf["end_ns"].max())) if len(inf) else (0, 0)
    span = tuple(int(x) for x in clock.to_reference(np.array(own))) if len(inf) else (0, 0)
    comm = communication_events(t)
    comm_s, comm_j = communication_seconds(t, comm), communication_joules(t, r, comm)
    log = t.all_power()
    energy = None
    if log is not None and log.channels and len(inf):
        energy = add_measurements([log.energy_between(dev, *own) for dev in log.devices], "+".join(log.devices),
                                  (own[1] - own[0]) / 1e9)
    return RankRow(rank, d.get("host", ""), int(d.get("local_rank", rank)), str(t.path),
                   dict(t.meta.get("device_ids") or {}), len(inf), inference_s, span, comm_s, comm_j, energy, clock)


def communication_events(t: Trace) -> np.ndarray:
    """The rank's outermost communication ops or kernels inside its inferences (a
    c10d op and the gloo op inside it: the c10d op), per device."""
    ev = t.events
    if not len(ev):
        return ev
    names = np.array([is_communication(s) for s in t.strings], dtype=bool)
    ev = ev[names[ev["name"]]]
    keep = []
    for dev in np.unique(ev["device"]):
        e = np.sort(ev[ev["device"] == dev], order=["start_ns"])
        reach = np.maximum.accumulate(e["end_ns"])
        outer = np.ones(len(e), bool)
        outer[1:] = e["start_ns"][1:] >= reach[:-1]
        keep.append(e[outer])
    return np.concatenate(keep) if keep else ev


def communication_seconds(t: Trace, events: np.ndarray | None = None) -> float:
    """The rank's time in communication: per device the outermost events' time; the
    devices' overlap, so the longest of them."""
    ev = communication_events(t) if events is None else events
    per_device = [int((ev["end_ns"] - ev["start_ns"])[ev["device"] == d].sum()) for d in np.unique(ev["device"])]
    return max(per_device, default=0) / 1e9


def communication_joules(t: Trace, r, events: np.ndarray) -> float | None:
    """An estimate of the communication's energy: each event's time at the power the
    rank's attribution gives the layer it ran in (its innermost module scope, else
    the time outside modules; a kernel's on the GPU it ran on, where the rank's results
    are per device); None without results with energy."""
    if r is None or not getattr(r, "has_energy", False):
        return None
    from .attribute import cuda_power_map

    power: dict = {}  # by label, and by (device, label) where the rank's results are per device
    for layer in r.layers:
        power.setdefault(layer.label, layer.power_w)
        power.setdefault((layer.device, layer.label), layer.power_w)
    on = cuda_power_map(t.meta)  # a kernel's CUDA device -> the power device that measures it
    outside = Role.OUTSIDE_MODULES.label
    total = 0.0
    for e in events:
        path = t.stack_path(int(e["stack"])) if e["stack"] else []
        label = path[-1] if path else outside
        dev = on.get(int(e["device"])) if e["device"] >= 0 else None
        w = power.get((dev, label)) if dev is not None else None
        if w is None:
            w = power.get(label)
        if w is None:
            w = power.get(outside)
        if w is None:
            return None
        total += w * (int(e["end_ns"]) - int(e["start_ns"])) / 1e9
    return total


def aligned(t: Trace, clock: Clock) -> Trace:
    """A rank's trace with every stamp (events, inferences, phases, readings) on rank 0's clock."""
    from dataclasses import replace

    def shifted(table, keys):
        table = table.copy()
        for key in keys:
            table[key] = clock.to_reference(table[key])
        return table

    def log(g):
        if g is None or not len(g.readings):
            return g
        r = shifted(g.readings, ("t_before_ns", "t_after_ns"))
        return replace(g, readings=r[np.argsort(r["t_after_ns"], kind="stable")])

    span = ("start_ns", "end_ns")
    return replace(t, events=shifted(t.events, span), inferences=shifted(t.inferences, span),
                   phases=shifted(t.phases, span), windows=shifted(t.windows, span), power=log(t.power),
                   idle=log(t.idle))


def _device_rows(by_rank, rows, logs, span, notes) -> list[DeviceRow]:
    """Each physical device once: its energy over the job's span, each piece of the
    span read from the readings of one rank that covers it."""
    seen: dict[str, list[tuple[int, str]]] = {}  # id -> (rank, device name in its file)
    names: dict[str, str] = {}
    for row in rows:
        t = by_rank[row.rank][0]
        log = logs[row.rank]
        product = (t.meta.get("sensor") or {}).get("devices") or {}
        for dev in (log.devices if log is not None else []):
            ident = row.devices.get(dev) or f"{row.host}/{dev} (rank {row.rank}, no id)"
            seen.setdefault(ident, []).append((row.rank, dev))
            names.setdefault(ident, product.get(dev, dev))
    out = []
    t0, t1 = span
    if t1 <= t0:
        return out
    for ident, holders in seen.items():
        cover = []
        for rank, dev in holders:
            r = logs[rank].readings[logs[rank].readings["channel"] == logs[rank].channel_index(
                next(c.name for c in logs[rank].channels if c.device == dev))]
            if len(r):
                cover.append((int(r["t_before_ns"].min()), int(r["t_after_ns"].max()), rank, dev))
        parts, used, gap, t = [], [], 0, t0
        while t < t1:
            here = [c for c in cover if c[0] <= t < c[1]]
            if not here:
                later = [c[0] for c in cover if c[0] > t]
                nxt = min(later + [t1])
                gap += min(nxt, t1) - t
                t = nxt
                continue
            a, b, rank, dev = max(here, key=lambda c: c[1])
            end = min(b, t1)
            parts.append(logs[rank].energy_between(dev, t, end))
            used.append(rank)
            t = end
        if not parts:
            notes.append(f"{ident}: no rank's readings cover the job's span; left out")
            continue
        if gap:
            notes.append(f"{ident}: {gap / 1e9:.3f} s of the job's span is in no rank's readings: its energy "
                         "there is not counted (the figure is a lower bound)")
        out.append(DeviceRow(ident, names[ident], tuple(r for r, _ in holders),
                             add_measurements(parts, ident), tuple(dict.fromkeys(used)), gap / 1e9))
    return out
