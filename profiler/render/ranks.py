"""A merged run of rank files (``phprof.attribution.ranks.MergedRun``): text, markdown, JSON
and a Perfetto timeline with one process per rank."""
from __future__ import annotations

import json
from .base import Renderer, register
from .formats import CPU_PID, POWER_PID, to_perfetto
from .units import aligned, amount, joules, markdown_table

#: in the merged timeline, rank r's threads are tids r * RANK_TID_STRIDE + k (k: the thread's
#: place in its rank's file; GPU streams from RANK_TID_STRIDE // 2 on), and its "External id"s
#: are shifted by r * RANK_ID_STRIDE, so that no two ranks' threads or joins meet
RANK_TID_STRIDE = 1_000_000
RANK_ID_STRIDE = 1_000_000_000
RANK_PID_BASE = 1000  # rank r is process 1000 + r; power tracks stay at POWER_PID + k


def _ms(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f} ms"


def _heading(m) -> list[str]:
    head = f"Merged run {m.run_id}: {len(m.ranks)} of {m.world_size} ranks" + \
        (f", backend {m.backend}" if m.backend else "")
    out = [("PARTIAL " if m.partial else "") + head]
    total = m.total
    if total is not None:
        out.append(f"Total energy (each physical device once, over the job's span "
                   f"{(m.span_ns[1] - m.span_ns[0]) / 1e9:.3f} s): {amount(total.energy)}, {total.energy.method_text}")
    u = m.clock_uncertainty_ns
    out.append("Clocks aligned to rank 0's " + (f"within +-{_ms(u)} (the widest rank's bound)" if u is not None
                                               else "for the ranks with a probe; see the rank rows"))
    return out


def _rank_table(m) -> tuple[list[str], list[list[str]]]:
    head = ["rank", "host", "inferences", "s/inference", "comm s", "waits s", "causes s", "energy (own span)",
            "offset", "+-", "clock"]
    rows = []
    for r in m.ranks:
        offset = r.clock.offsets_ns[0] if r.clock.offsets_ns else None
        rows.append([f"{r.rank}{' (slowest)' if r.rank == m.slowest else ''}", r.host, str(r.inferences),
                     f"{r.seconds_per_inference:.4f}", f"{r.communication_s:.4f}", f"{r.waiting_s:.4f}",
                     f"{r.causes_s:.4f}",
                     amount(r.energy.energy) if r.energy is not None else "-", _ms(offset),
                     _ms(r.clock.uncertainty_ns), r.clock.how])
    return head, rows


def _device_table(m) -> tuple[list[str], list[list[str]]]:
    head = ["device", "name", "ranks", "energy", "method"]
    rows = [[d.id, d.name, ",".join(map(str, d.ranks)), amount(d.energy.energy), d.energy.energy.method_text]
            for d in m.devices]
    return head, rows


def _communication(m) -> str:
    e = "" if m.communication_j is None else f", {joules(m.communication_j)} estimated at its layers' power"
    slow = "" if m.slowest is None else (f"; slowest rank {m.slowest}: the others wait {m.waiting_s:.4f} s for it "
                                         "at the collectives it arrives at last (estimated from the arrivals on "
                                         "rank 0's clock)")
    return (f"Communication (NCCL, gloo collectives): {m.communication_s:.4f} s in their ops over the ranks{e} "
            f"(a gloo op's wait for completion is outside it){slow}")


@register
class TextRanks(Renderer):
    view, name, suffixes = "ranks", "text", (".txt",)

    def render(self, m) -> str:
        out = _heading(m) + [""]
        out += aligned(*_rank_table(m)) + [""] + aligned(*_device_table(m)) + ["", _communication(m)]
        out += [f"note: {n}" for n in m.notes]
        return "\n".join(out) + "\n"


@register
class MarkdownRanks(Renderer):
    view, name, suffixes = "ranks", "markdown", (".md",)

    def render(self, m) -> str:
        out = [f"# {_heading(m)[0]}", ""] + [f"{x}  " for x in _heading(m)[1:]] + [""]
        out += ["## Ranks", ""] + markdown_table(*_rank_table(m)) + ["", "## Devices", ""] + \
            markdown_table(*_device_table(m))
        out += ["", _communication(m), ""] + [f"- {n}" for n in m.notes]
        return "\n".join(out) + "\n"


def _measurement(x) -> dict | None:
    if x is None:
        return None
    return {"joules": x.joules, "low_j": x.low_j, "high_j": x.high_j, "method": x.energy.method_text,
            "kind": x.kind, "seconds": x.seconds}


@register
class JsonRanks(Renderer):
    view, name, suffixes = "ranks", "json", (".json",)

    def render(self, m) -> str:
        doc = {
            "run_id": m.run_id, "world_size": m.world_size, "backend": m.backend, "partial": m.partial,
            "missing_ranks": m.missing, "span_ns": list(m.span_ns), "total": _measurement(m.total),
            "clock_uncertainty_ns": m.clock_uncertainty_ns, "slowest_rank": m.slowest, "waiting_s": m.waiting_s,
            "communication_s": m.communication_s, "communication_j": m.communication_j,
            "profiler_waiting_s": m.profiler_waiting_s,
            "ranks": [{"rank": r.rank, "host": r.host, "local_rank": r.local_rank, "path": r.path,
                       "devices": r.devices, "inferences": r.inferences, "inference_s": r.inference_s,
                       "span_ns": list(r.span_ns), "communication_s": r.communication_s,
                       "communication_j": r.communication_j, "waiting_s": r.waiting_s, "causes_s": r.causes_s,
                       "energy": _measurement(r.energy),
                       "clock": {"at_ns": list(r.clock.at_ns), "offsets_ns": list(r.clock.offsets_ns),
                                 "uncertainty_ns": r.clock.uncertainty_ns, "how": r.clock.how}}
                      for r in m.ranks],
            "devices": [{"id": d.id, "name": d.name, "ranks": list(d.ranks), "read_from": list(d.read_from),
                         "uncovered_s": d.uncovered_s, "energy": _measurement(d.energy)} for d in m.devices],
            "notes": m.notes,
        }
        return json.dumps(doc, indent=2)


# ------------------------------------------------------------------------------ the timeline


def to_perfetto_ranks(m) -> dict:
    """The merged run's timeline as Chrome-trace JSON: one process per rank (its CPU
    threads, then its GPU streams), every stamp on rank 0's clock; a power track
    per physical GPU (from the first rank that measured it); ``distributedInfo``
    with the backend and world size (Holistic Trace Analysis's key) and the ranks'
    clock offsets in ``phprof.ranks``. Read back by ``phprof.tracing.kineto``
    (its CPU events' threads are ``rank * RANK_TID_STRIDE + k``)."""
    parts = {}
    for r in m.ranks:
        t = m.traces[r.rank]  # on rank 0's clock
        parts[r.rank] = (t, to_perfetto(t))
    base = min(doc["baseTimeNanoseconds"] for _, doc in parts.values())
    events: list[dict] = []
    tracks = {d.id: k for k, d in enumerate(m.devices)}
    for r in m.ranks:
        t, doc = parts[r.rank]
        shift_us = (doc["baseTimeNanoseconds"] - base) / 1000.0
        pid = RANK_PID_BASE + r.rank
        tids: dict[tuple[int, int], int] = {}

        def tid_of(old_pid: int, old_tid: int) -> int:
            key = (old_pid, old_tid)
            if key not in tids:
                start = 0 if old_pid == CPU_PID else RANK_TID_STRIDE // 2
                tids[key] = r.rank * RANK_TID_STRIDE + start + sum(1 for k in tids if (k[0] == CPU_PID) ==
                                                                   (old_pid == CPU_PID))
            return tids[key]

        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"name": f"rank {r.rank} ({r.host})"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": r.rank}})
        power_of = {}  # this rank's power pid -> the merged track, for the devices it is read from
        for k, dev in enumerate(doc["phprof"]["power_devices"]):
            ident = r.devices.get(dev)
            row = next((d for d in m.devices if d.id == ident), None)
            if row is not None and row.ranks[0] == r.rank:
                power_of[POWER_PID + k] = (POWER_PID + tracks[ident], f"power {row.name} {ident} (rank {r.rank} {dev})")
        for e in doc["traceEvents"]:
            e = dict(e)
            old_pid = e.get("pid")
            if e["ph"] == "M":
                if old_pid in power_of and e["name"] == "process_name":
                    events.append({**e, "pid": power_of[old_pid][0], "args": {"name": power_of[old_pid][1]}})
                elif old_pid in power_of:
                    events.append({**e, "pid": power_of[old_pid][0]})
                elif e["name"] == "thread_name":
                    what = "thread" if old_pid == CPU_PID else f"GPU {old_pid}"
                    events.append({**e, "pid": pid, "tid": tid_of(old_pid, e["tid"]),
                                   "args": {"name": f"{what} {e['args']['name']}"}})
                continue
            if "ts" in e:
                e["ts"] = e["ts"] + shift_us
            if e["ph"] == "C":
                if old_pid not in power_of:
                    continue  # a device another rank's track already shows
                e["pid"] = power_of[old_pid][0]
                events.append(e)
                continue
            e["tid"] = tid_of(old_pid, e.get("tid", 0))
            e["pid"] = pid
            args = e.get("args")
            if args and "External id" in args:
                e["args"] = {**args, "External id": args["External id"] + r.rank * RANK_ID_STRIDE}
            events.append(e)
    return {
        "schemaVersion": 1,
        "traceName": f"phprof merged run {m.run_id}",
        "displayTimeUnit": "ns",
        "baseTimeNanoseconds": base,
        "distributedInfo": {"backend": m.backend or "unknown", "rank": 0, "world_size": m.world_size},
        "phprof": {"merged_ranks": [r.rank for r in m.ranks], "partial": m.partial, "run_id": m.run_id,
                   "rank_pid_base": RANK_PID_BASE, "rank_tid_stride": RANK_TID_STRIDE,
                   "rank_id_stride": RANK_ID_STRIDE, "power_pid": POWER_PID,
                   "power_devices": [d.id for d in m.devices],
                   "ranks": {str(r.rank): {"host": r.host, "offset_ns": list(r.clock.offsets_ns),
                                           "uncertainty_ns": r.clock.uncertainty_ns, "clock": r.clock.how}
                             for r in m.ranks}},
        "traceEvents": events,
    }


@register
class PerfettoRanks(Renderer):
    """The merged run's timeline (ui.perfetto.dev, chrome://tracing)."""

    view, name, suffixes = "ranks", "perfetto", (".perfetto.json", ".trace.json")

    def render(self, m) -> str:
        return json.dumps(to_perfetto_ranks(m), separators=(",", ":"), ensure_ascii=False)


