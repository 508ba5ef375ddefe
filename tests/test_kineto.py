"""phprof.tracing.kineto: Kineto Chrome traces as tables, checked against real traces.

The real traces (../shared/data/kineto, see its README) are read a second time
here with the standard json module and Decimal numbers, so that every figure
the loader produces is compared with one computed independently.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from phprof.store import CATEGORY, DEVICE_KINDS, STACK_DTYPE, Kind
from phprof.tracing.kineto import KINETO_EVENT_DTYPE, KinetoTrace, load_kineto

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kineto"
V100 = DATA / "v100-resnet-ns.json.gz"
A100 = DATA / "a100-alexnet.json.gz"
CPU_ONLY = DATA / "cpu-only.json.gz"

needs_data = pytest.mark.skipif(
    not V100.exists(), reason=f"real Kineto traces not found at {DATA} (the ../shared checkout is missing)"
)


def ns(value) -> int:
    """Microseconds (a Decimal or int from the JSON text) -> ns, independently of the loader."""
    return int(Decimal(value) * 1000)


def raw_events(path: Path) -> list[dict]:
    """The trace's events with every number exact (floats as Decimal)."""
    return json.loads(gzip.open(path).read(), parse_float=Decimal)["traceEvents"]


@pytest.fixture(scope="module")
def v100() -> KinetoTrace:
    t0 = time.perf_counter()
    trace = load_kineto(V100)
    print(f"\nload_kineto({V100.name}): {time.perf_counter() - t0:.2f} s, {len(trace.events)} events")
    return trace


@pytest.fixture(scope="module")
def v100_raw() -> list[dict]:
    return raw_events(V100)


def test_kind_values_are_fixed():
    """Stored files hold these numbers: they must never change."""
    from phprof.tracing import kineto

    assert {k.name: int(k) for k in Kind} == {
        "CPU_OP": 0,
        "USER_ANNOTATION": 1,
        "KERNEL": 2,
        "MEMCPY": 3,
        "MEMSET": 4,
        "GPU_ANNOTATION": 5,
        "RUNTIME": 6,
    }
    # the kinds are the store's (phprof.store.Kind), which the parser maps every category to
    assert kineto.Kind is Kind and set(CATEGORY) == set(Kind)
    assert all(kineto._KIND_OF_CAT[CATEGORY[k]] == k for k in Kind)
    assert KINETO_EVENT_DTYPE.names == (
        "start_ns", "end_ns", "name", "kind", "device", "stream", "correlation", "external_id", "op", "stack"
    )


# ------------------------------------------------------------------ v100


@pytest.mark.integration
@needs_data
def test_v100_counts_and_metadata(v100):
    s = v100.summary()
    assert s["kinds"] == {
        "CPU_OP": 23910,
        "USER_ANNOTATION": 70,
        "KERNEL": 4350,
        "MEMCPY": 1600,
        "MEMSET": 145,
        "GPU_ANNOTATION": 15,
        "RUNTIME": 15329,
    }
    assert v100.events.dtype == KINETO_EVENT_DTYPE and v100.stacks.dtype == STACK_DTYPE
    assert s["skipped"] == {"Trace": 1}
    assert v100.base_time_ns == 0 and v100.schema_version == 1 and v100.exact_ns
    assert s["devices"] == [0]
    props = v100.device_properties
    assert len(props) == 8 and props[0]["name"] == "Tesla V100-SXM2-32GB" and props[0]["numSms"] == 80
    assert props[0]["totalGlobalMem"] == 34079637504
    # table order: by start, an enclosing event before what it encloses
    ev = v100.events
    assert np.all(np.diff(ev["start_ns"]) >= 0)
    same = np.diff(ev["start_ns"]) == 0
    assert np.all(ev["end_ns"][:-1][same] >= ev["end_ns"][1:][same])
    # interned names
    assert v100.names[0] == "" and len(set(v100.names)) == len(v100.names)
    assert len(np.unique(ev["name"])) <= len(v100.names)
    assert v100.name_of(v100.name_id("cudaLaunchKernel")) == "cudaLaunchKernel"
    assert s["span_ns"] == s["end_ns"] - s["start_ns"] > 0


@pytest.mark.integration
@needs_data
def test_v100_nanoseconds_are_exact(v100, v100_raw):
    kept = {"cpu_op", "user_annotation", "kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation", "cuda_runtime"}
    x = [e for e in v100_raw if e.get("ph") == "X" and e.get("cat") in kept]
    starts = sorted(ns(e["ts"]) for e in x)
    ends = sorted(ns(e["ts"]) + ns(e["dur"]) for e in x)
    assert np.array_equal(np.sort(v100.events["start_ns"]), np.array(starts, np.int64))
    assert np.array_equal(np.sort(v100.events["end_ns"]), np.array(ends, np.int64))
    # one by hand: cudaLaunchKernel, correlation 135071, "ts": 1712195495505543.140, "dur": 41.768
    ev = v100.events
    row = np.flatnonzero((ev["kind"] == Kind.RUNTIME) & (ev["correlation"] == 135071))
    assert len(row) == 1
    assert ev["start_ns"][row[0]] == 1712195495505543140
    assert ev["end_ns"][row[0]] == 1712195495505543140 + 41768
    # a float64 parse could not have given this: the doubles there are 0.25 us apart
    assert round(float("1712195495505543.140") * 1000) != 1712195495505543140


@pytest.mark.integration
@needs_data
def test_v100_kernels_join_runtime_and_op(v100):
    ev = v100.events
    dev = v100.rows(*DEVICE_KINDS)
    assert len(dev) == 4350 + 1600 + 145
    launch = v100.launch[dev]
    assert (launch >= 0).mean() >= 0.99
    launched = dev[launch >= 0]
    rt = v100.launch[launched]
    assert np.all(ev["kind"][rt] == Kind.RUNTIME)
    assert np.all(ev["correlation"][rt] == ev["correlation"][launched])
    # the launch's External id leads to a cpu_op on the launching thread that contains it
    op = ev["op"][launched]
    assert (op >= 0).mean() >= 0.99
    ok = op >= 0
    op, rt = op[ok], rt[ok]
    assert np.all(ev["kind"][op] == Kind.CPU_OP)
    assert np.all(ev["external_id"][op] == ev["external_id"][rt])
    assert np.all(ev["stream"][op] == ev["stream"][rt])
    assert np.all((ev["start_ns"][op] <= ev["start_ns"][rt]) & (ev["end_ns"][rt] <= ev["end_ns"][op]))
    assert v100.joined_fraction >= 0.99
    st = v100.join_stats
    assert st["device_events"] == len(dev) and st["unjoined"] == len(dev) - int((ev["op"][dev] >= 0).sum())
    assert v100.summary()["joined_fraction"] == v100.joined_fraction
    print(f"\nv100 join: {v100.joined_fraction:.2%} of {len(dev)} device events; {st}")


@pytest.mark.integration
@needs_data
def test_v100_join_matches_the_json(v100, v100_raw):
    """Kernel -> runtime (correlation) -> cpu_op (External id, same thread), by brute force."""
    runtime = {e["args"]["correlation"]: e for e in v100_raw if e.get("cat") == "cuda_runtime"}
    ops = defaultdict(list)
    for e in v100_raw:
        if e.get("cat") == "cpu_op":
            ops[e["args"]["External id"]].append(e)
    expected = {}
    for e in v100_raw:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            r = runtime[e["args"]["correlation"]]
            cands = [o for o in ops[r["args"]["External id"]] if o["tid"] == r["tid"]]
            o = min(cands, key=lambda o: o["dur"])
            expected[e["args"]["correlation"]] = (o["name"], ns(o["ts"]), o["tid"])
    ev = v100.events
    dev = v100.rows(*DEVICE_KINDS)
    got = {
        int(ev["correlation"][r]): (v100.name_of(ev["name"][o]), int(ev["start_ns"][o]), int(ev["stream"][o]))
        for r, o in zip(dev, ev["op"][dev])
    }
    assert got == expected


@pytest.mark.integration
@needs_data
def test_v100_join_agrees_with_flow_events(v100, v100_raw):
    """ac2g flows: "s" on the launch, "f" on the device event, one id = the correlation."""
    starts = {e["id"]: e for e in v100_raw if e.get("ph") == "s" and e.get("cat") == "ac2g"}
    finishes = defaultdict(list)
    for e in v100_raw:
        if e.get("ph") == "f" and e.get("cat") == "ac2g":
            finishes[e["id"]].append(e)
    ev = v100.events
    dev = v100.rows(*DEVICE_KINDS)
    checked = 0
    for r in dev:
        corr = int(ev["correlation"][r])
        s = starts[corr]
        (f,) = [f for f in finishes[corr] if f["pid"] == ev["device"][r] and f["tid"] == ev["stream"][r]]
        assert ns(f["ts"]) == ev["start_ns"][r]
        launch = v100.launch[r]
        assert ns(s["ts"]) == ev["start_ns"][launch] and s["tid"] == ev["stream"][launch]
        checked += 1
    assert checked == len(dev) == 6095


@pytest.mark.integration
@needs_data
def test_v100_kernels_inherit_the_scopes_of_their_ops(v100, v100_raw):
    ev = v100.events
    # one chain by hand: the kernel of correlation 135071 (aten::cat, External id 112,
    # thread 1102) runs in ResNet's first forward pass
    (k,) = np.flatnonzero((ev["kind"] == Kind.KERNEL) & (ev["correlation"] == 135071))
    op = ev["op"][k]
    assert v100.name_of(ev["name"][op]) == "aten::cat" and ev["external_id"][op] == 112
    path = ["ProfilerStep#101", "## forward ##", "DistributedDataParallel.forward"]
    assert v100.stack_path(ev["stack"][k]) == path == v100.stack_path(ev["stack"][op])
    assert v100.stack_id(path) == ev["stack"][k]
    (cat,) = [e for e in v100_raw if e.get("cat") == "cpu_op" and e["args"]["External id"] == 112]
    enclosing = [
        e
        for e in v100_raw
        if e.get("cat") == "user_annotation"
        and e["tid"] == cat["tid"]
        and e["ts"] <= cat["ts"]
        and cat["ts"] + cat["dur"] <= e["ts"] + e["dur"]
    ]
    assert [e["name"] for e in sorted(enclosing, key=lambda e: e["ts"])] == path

    # every device event, by brute force from the JSON: the user_annotations around its op
    annotations = defaultdict(list)
    for e in v100_raw:
        if e.get("cat") == "user_annotation":
            annotations[e["tid"]].append((ns(e["ts"]), ns(e["ts"]) + ns(e["dur"]), e["name"]))
    dev = v100.rows(*DEVICE_KINDS)
    for r in dev:
        o = ev["op"][r]
        s, e, tid = ev["start_ns"][o], ev["end_ns"][o], ev["stream"][o]
        around = sorted((a for a in annotations[tid] if a[0] <= s and e <= a[1]), key=lambda a: (a[0], -a[1]))
        assert v100.stack_path(ev["stack"][r]) == [a[2] for a in around]
    # most forward kernels are inside DistributedDataParallel.forward; backward ones run on
    # the autograd thread, where no annotation is open
    in_fwd = [v100.stack_path(s)[-1:] == ["DistributedDataParallel.forward"] for s in ev["stack"][dev]]
    assert sum(in_fwd) == 5 * 460


@pytest.mark.integration
@needs_data
def test_v100_annotation_stacks_include_themselves(v100):
    ev = v100.events
    for r in v100.rows(Kind.USER_ANNOTATION):
        path = v100.stack_path(ev["stack"][r])
        assert path[-1] == v100.name_of(ev["name"][r])
    # gpu_user_annotation spans mirror the user_annotation of the same External id
    ga = v100.rows(Kind.GPU_ANNOTATION)
    assert len(ga) == 15 and np.all(ev["op"][ga] >= 0)
    ua = ev["op"][ga]
    assert np.all(ev["kind"][ua] == Kind.USER_ANNOTATION)
    assert np.all(ev["external_id"][ua] == ev["external_id"][ga])
    assert np.all(ev["name"][ua] == ev["name"][ga])
    assert np.all(ev["stack"][ua] == ev["stack"][ga])
    assert len(v100.annotations()) == 70 and len(v100.annotations(gpu=True)) == 15
    assert len(v100.cpu_ops()) == 23910 and len(v100.kernels()) == 6095 and len(v100.runtime_calls()) == 15329
    # the trie: row 0 is the root, every node is its parent's stack plus one scope
    st = v100.stacks
    assert st[0]["parent"] == 0 and v100.names[st[0]["scope"]] == ""
    assert v100.stack_path(0) == [] and v100.stack_id([]) == 0
    for i in range(1, len(st)):
        p = v100.stack_path(i)
        assert p[:-1] == v100.stack_path(st[i]["parent"]) and v100.stack_id(p) == i
    with pytest.raises(KeyError):
        v100.stack_id(["## forward ##"])  # only ever inside a ProfilerStep


@pytest.mark.integration
@needs_data
def test_v100_scope_filter():
    trace = load_kineto(V100, scope_filter=lambda name: not name.startswith(("##", "nccl:")))
    ev = trace.events
    (k,) = np.flatnonzero((ev["kind"] == Kind.KERNEL) & (ev["correlation"] == 135071))
    assert trace.stack_path(ev["stack"][k]) == ["ProfilerStep#101", "DistributedDataParallel.forward"]
    names = {trace.names[s] for s in trace.stacks["scope"]}
    assert not any(n.startswith(("##", "nccl:")) for n in names)
    # annotations that are not scopes are still events, with the stack around them
    fwd = [r for r in trace.rows(Kind.USER_ANNOTATION) if trace.name_of(ev["name"][r]) == "## forward ##"]
    assert len(fwd) == 5
    assert [trace.stack_path(ev["stack"][r]) for r in fwd] == [[f"ProfilerStep#{i}"] for i in range(101, 106)]


@pytest.mark.integration
@needs_data
def test_v100_time_join_agrees_with_external_id(v100):
    """Without External ids on the launches, containment in time finds the same ops."""
    doc = json.loads(gzip.open(V100).read(), parse_float=str)  # exact, like the file
    for e in doc["traceEvents"]:
        if e.get("cat") in ("cuda_runtime", "kernel", "gpu_memcpy", "gpu_memset"):
            e["args"].pop("External id", None)
    trace = load_kineto(doc)
    assert trace.exact_ns and np.array_equal(trace.events["start_ns"], v100.events["start_ns"])
    dev = v100.rows(*DEVICE_KINDS)
    assert trace.join_stats["op_by_time"] == len(dev) and v100.join_stats["op_by_external_id"] == len(dev)
    assert np.array_equal(trace.events["op"][dev], v100.events["op"][dev])
    assert np.array_equal(trace.events["stack"], v100.events["stack"])


@pytest.mark.integration
@needs_data
def test_v100_parse_time(v100):
    t0 = time.perf_counter()
    load_kineto(V100)
    elapsed = time.perf_counter() - t0
    print(f"\nparsing {V100.name} (68,692 JSON events): {elapsed:.2f} s")
    assert elapsed < 20  # generous: shared CI machines; a few tenths of a second here


@pytest.mark.integration
@needs_data
def test_plain_float_dict_is_flagged_inexact():
    trace = load_kineto(json.loads(gzip.open(V100).read()))  # floats: 0.25 us steps at this epoch
    assert not trace.exact_ns and trace.joined_fraction == 1.0


# ------------------------------------------------------------------ a100


@pytest.mark.integration
@needs_data
def test_a100_everything_joins_across_streams():
    trace = load_kineto(A100)
    raw = raw_events(A100)
    ev = trace.events
    k = trace.summary()["kinds"]
    assert (k["KERNEL"], k["CPU_OP"], k["RUNTIME"], k["MEMCPY"], k["MEMSET"]) == (79, 359, 361, 16, 3)
    assert trace.skipped["cuda_sync"] == 41
    assert any("A100" in p["name"] for p in trace.device_properties)
    assert trace.device_properties[0]["name"] == "NVIDIA A100-PG509-200"
    dev = trace.rows(*DEVICE_KINDS)
    assert np.all(trace.launch[dev] >= 0) and np.all(ev["op"][dev] >= 0)
    assert trace.joined_fraction == 1.0
    for kind in DEVICE_KINDS:
        assert np.all(ev["op"][trace.rows(kind)] >= 0)
    streams = set(ev["stream"][dev].tolist())
    assert streams == {7, 20}
    # This trace's External ids on launches repeat the correlation and name no op that
    # contains the launch (a few name an unrelated op), so the innermost CPU op around
    # the launch on its thread is used. Brute force from the JSON:
    runtime = {e["args"]["correlation"]: e for e in raw if e.get("cat") == "cuda_runtime"}
    cpu = [e for e in raw if e.get("cat") == "cpu_op"]
    for r in dev:
        rt = runtime[int(ev["correlation"][r])]
        around = [o for o in cpu if o["tid"] == rt["tid"] and o["ts"] <= rt["ts"] and rt["ts"] + rt["dur"] <= o["ts"] + o["dur"]]
        innermost = min(around, key=lambda o: (o["dur"], -o["ts"]))
        o = ev["op"][r]
        assert (trace.name_of(ev["name"][o]), ev["start_ns"][o]) == (innermost["name"], ns(innermost["ts"]))
    assert trace.join_stats["op_by_time"] == len(dev) == 98
    (k218,) = np.flatnonzero((ev["kind"] == Kind.KERNEL) & (ev["correlation"] == 218))
    assert trace.name_of(ev["name"][ev["op"][k218]]) == "aten::uniform_"  # not the op with External id 218
    # kernels on both streams sit in the benchmark's annotations: all in "[param|cuda]",
    # those of stream 20 in the model's warm-up and measured forward passes
    paths = {s: [trace.stack_path(x) for x in ev["stack"][dev[ev["stream"][dev] == s]]] for s in (7, 20)}
    assert all(p[0] == "[param|cuda]" for p in paths[7] + paths[20])
    assert all(len(p) == 4 and p[-1].endswith("|forward]") for p in paths[20]) and len(paths[20]) == 7
    print(f"\na100 join: {trace.joined_fraction:.2%} of {len(dev)} device events; {trace.join_stats}")


# ------------------------------------------------------------------ cpu only


@needs_data
def test_cpu_only_trace():
    trace = load_kineto(CPU_ONLY)
    ev = trace.events
    assert len(trace.kernels()) == 0 and len(trace.annotations(gpu=True)) == 0
    assert np.all(ev["device"] == -1) and np.all(trace.launch == -1)
    assert trace.joined_fraction == 1.0
    assert trace.base_time_ns == 1719853884000000000
    # "gloo:all_reduce", thread 3553: "ts": 1212075548353.304, "dur": 173209.713
    row = np.flatnonzero((ev["start_ns"] == 1719853884000000000 + 1212075548353304))
    assert len(row) == 1 and trace.name_of(ev["name"][row[0]]) == "gloo:all_reduce"
    assert ev["end_ns"][row[0]] - ev["start_ns"][row[0]] == 173209713
    assert ev["stream"][row[0]] == 3553
    day = dt.datetime.fromtimestamp(ev["start_ns"].min() / 1e9, dt.timezone.utc).date()
    assert day == dt.date(2024, 7, 15)  # the day its log lines say it was recorded
    raw = raw_events(CPU_ONLY)
    ua = [e for e in raw if e.get("cat") == "user_annotation"]
    assert sorted(ev["start_ns"][trace.rows(Kind.USER_ANNOTATION)].tolist()) == sorted(
        1719853884000000000 + ns(e["ts"]) for e in ua
    )
    # annotations form stacks per thread (each gloo:all_reduce on its own thread, none
    # nested); the four cpu_ops run after the profiler step ended, outside every scope
    for r in trace.rows(Kind.USER_ANNOTATION):
        assert trace.stack_path(ev["stack"][r]) == [trace.name_of(ev["name"][r])]
    assert sorted(trace.stack_path(i) for i in range(len(trace.stacks))) == [[], ["ProfilerStep#551"], ["gloo:all_reduce"]]
    step = trace.rows(Kind.USER_ANNOTATION)[ev["name"][trace.rows(Kind.USER_ANNOTATION)] == trace.name_id("ProfilerStep#551")]
    assert np.all(trace.cpu_ops()["start_ns"] > ev["end_ns"][step[0]])
    assert np.all(trace.cpu_ops()["stack"] == 0)


# ------------------------------------------------------------------ synthetic


def _x(cat, name, ts, dur, pid=100, tid=10, **args):
    args = {k.replace("_", " ") if k == "External_id" else k: v for k, v in args.items()}
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def test_synthetic_joins_and_scopes(tmp_path):
    events = [
        _x("user_annotation", "model", 50, 350, External_id=1),
        _x("cpu_op", "outer_op", 100, 100, External_id=5),
        _x("user_annotation", "model.layer", 105, 75, External_id=2),
        _x("cpu_op", "inner_op", 110, 40, External_id=5),  # shares External id 5 with outer_op
        _x("cpu_op", "elsewhere", 119, 7, tid=11, External_id=5),  # shorter, other thread
        _x("cuda_runtime", "cudaLaunchKernel", 120, 5, External_id=5, correlation=1),
        _x("kernel", "k1", 130, 10, pid=0, tid=7, External_id=5, correlation=1, device=0, stream=7),
        _x("cuda_runtime", "cudaMemcpyAsync", 130, 1, External_id=5, correlation=2),
        _x("gpu_memcpy", "Memcpy HtoD", 131, 2, pid=1, tid=20, External_id=5, correlation=2, device=1, stream=20),
        _x("cpu_op", "lone_op", 160, 5, External_id=6),
        _x("kernel", "k_no_launch", 170, 3, pid=0, tid=7, External_id=6, correlation=3, device=0, stream=7),
        _x("cpu_op", "late_op", 290, 30, External_id=7),
        _x("cuda_driver", "cuLaunchKernel", 300, 5, External_id=999, correlation=4),
        _x("kernel", "k_by_time", 310, 3, pid=0, tid=7, External_id=999, correlation=4, device=0, stream=7),
        _x("kernel", "k_orphan", 320, 3, pid=0, tid=7, correlation=5, device=0, stream=7),
        _x("cuda_sync", "Stream Sync", 330, 1, pid=0, tid=7),
        _x("python_function", "forward", 60, 10),
        {"ph": "s", "id": 1, "pid": 100, "tid": 10, "ts": 120, "cat": "ac2g", "name": "ac2g"},
        {"ph": "M", "name": "thread_name", "pid": 100, "tid": 10, "args": {"name": "main"}},
    ]
    doc = {"schemaVersion": 1, "baseTimeNanoseconds": 1_000_000_000_000_000_000, "deviceProperties": [], "traceEvents": events}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    trace = load_kineto(path)
    ev = trace.events
    by_name = {trace.name_of(n): i for i, n in enumerate(ev["name"])}

    def name(row):
        return trace.name_of(ev["name"][row]) if row >= 0 else None

    assert trace.skipped == {"cuda_sync": 1, "python_function": 1}
    assert ev["start_ns"][by_name["model"]] == 1_000_000_000_000_000_000 + 50_000
    assert name(ev["op"][by_name["k1"]]) == "inner_op"  # innermost on the launching thread
    assert name(ev["op"][by_name["Memcpy HtoD"]]) == "inner_op"  # another device and stream
    assert name(trace.launch[by_name["Memcpy HtoD"]]) == "cudaMemcpyAsync"
    assert ev["device"][by_name["Memcpy HtoD"]] == 1 and ev["stream"][by_name["Memcpy HtoD"]] == 20
    assert name(ev["op"][by_name["k_no_launch"]]) == "lone_op"  # its own External id
    assert trace.launch[by_name["k_no_launch"]] == -1
    assert name(ev["op"][by_name["k_by_time"]]) == "late_op"  # driver launch, id names nothing
    assert ev["kind"][trace.launch[by_name["k_by_time"]]] == Kind.RUNTIME
    assert ev["op"][by_name["k_orphan"]] == -1 and ev["stack"][by_name["k_orphan"]] == 0
    assert ev["external_id"][by_name["k_orphan"]] == -1
    assert trace.join_stats == {
        "device_events": 5,
        "with_launch": 3,
        "op_by_external_id": 2,
        "op_by_time": 1,
        "op_by_external_id_without_launch": 1,
        "unjoined": 1,
        "duplicate_correlations": 0,
        "gpu_annotations_joined": 0,
    }
    assert trace.joined_fraction == 4 / 5

    def path_of(n):
        return trace.stack_path(ev["stack"][by_name[n]])

    assert path_of("outer_op") == ["model"]  # begins before model.layer
    assert path_of("inner_op") == ["model", "model.layer"]
    assert path_of("k1") == path_of("Memcpy HtoD") == ["model", "model.layer"]
    assert path_of("model.layer") == ["model", "model.layer"]
    assert path_of("elsewhere") == []  # thread 11 has no annotations
    assert path_of("late_op") == path_of("k_by_time") == ["model"]
    assert path_of("cudaLaunchKernel") == ["model", "model.layer"]

    only_model = load_kineto(path, scope_filter=lambda n: n == "model")
    ev2 = only_model.events
    assert [only_model.stack_path(s) for s in ev2["stack"][ev2["name"] == only_model.name_id("k1")]] == [["model"]]
    assert [only_model.stack_path(s) for s in ev2["stack"][ev2["name"] == only_model.name_id("model.layer")]] == [["model"]]
    with pytest.raises(KeyError):
        only_model.stack_id(["model", "model.layer"])


def test_scopes_that_overlap_without_nesting():
    events = [
        _x("user_annotation", "A", 0, 10),
        _x("user_annotation", "B", 5, 10),  # overlaps A's end: not inside A
        _x("cpu_op", "in_a", 1, 1),
        _x("cpu_op", "in_both", 7, 1),
        _x("cpu_op", "in_b", 12, 1),
        _x("cpu_op", "after", 20, 1),
        _x("cpu_op", "at_a_end", 10, 1),
    ]
    trace = load_kineto({"traceEvents": events})
    ev = trace.events
    got = {trace.name_of(n): trace.stack_path(s) for n, s in zip(ev["name"], ev["stack"])}
    assert got == {"A": ["A"], "B": ["B"], "in_a": ["A"], "in_both": ["B"], "in_b": ["B"], "after": [], "at_a_end": ["B"]}


def test_number_texts_to_nanoseconds():
    texts = ["1712195495519689.047", "0.06", "12", "7.1234", "7.1235", "1e3", "1.5E-3", "-1.5", "4457111042322.215"]
    ts = [int(t) if t.isdigit() else t for t in texts]
    events = [_x("cpu_op", f"op{i}", t, 0, tid=i) for i, t in enumerate(ts)]
    trace = load_kineto({"traceEvents": events, "baseTimeNanoseconds": 7})
    got = {trace.name_of(n): int(s) - 7 for n, s in zip(trace.events["name"], trace.events["start_ns"])}
    assert [got[f"op{i}"] for i in range(len(texts))] == [
        1712195495519689047,
        60,
        12000,
        7123,
        7124,  # the fourth decimal rounds half up
        1000000,
        2,
        -1500,
        4457111042322215,
    ]
    # plain floats read back through repr: exact while the double holds the decimals
    rel = load_kineto({"traceEvents": [_x("cpu_op", "a", 4457111042322.215, 0.06)]})
    assert rel.exact_ns and rel.events["start_ns"][0] == 4457111042322215 and rel.events["end_ns"][0] == 4457111042322275
    empty = load_kineto({"traceEvents": []})
    assert len(empty.events) == 0 and empty.joined_fraction == 1.0 and len(empty.stacks) == 1
    assert empty.summary()["events"] == 0


# ------------------------------------------------------------------ torch, here


@pytest.mark.integration
def test_torch_cpu_trace_stacks_and_realtime_clock(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is needed to record a trace here")
    from torch.profiler import ProfilerActivity, profile, record_function

    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(8, 16)
    before = time.time_ns()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.sin(x)
        with record_function("outer"):
            torch.cos(x)
            with record_function("outer.inner"):
                model(x)
        torch.tan(x)
    after = time.time_ns()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))

    trace = load_kineto(path)
    ev = trace.events
    assert trace.base_time_ns > 0 and trace.exact_ns
    assert np.all(before <= ev["start_ns"]) and np.all(ev["end_ns"] <= after)
    ua = {trace.name_of(ev["name"][r]): r for r in trace.rows(Kind.USER_ANNOTATION)}
    assert set(ua) == {"outer", "outer.inner"}
    inner = ua["outer.inner"]
    assert trace.stack_path(ev["stack"][ua["outer"]]) == ["outer"]
    assert trace.stack_path(ev["stack"][inner]) == ["outer", "outer.inner"]
    ops = trace.rows(Kind.CPU_OP)
    names = trace.names_of(ev["name"][ops])
    paths = [trace.stack_path(s) for s in ev["stack"][ops]]
    in_inner = (
        (ev["stream"][ops] == ev["stream"][inner])
        & (ev["start_ns"][ops] >= ev["start_ns"][inner])
        & (ev["end_ns"][ops] <= ev["end_ns"][inner])
    )
    assert in_inner.sum() >= 3
    for name, path, inside in zip(names, paths, in_inner):
        if inside:
            assert path == ["outer", "outer.inner"], name
    by_name = defaultdict(list)
    for name, path in zip(names, paths):
        by_name[name].append(path)
    assert by_name["aten::linear"] == [["outer", "outer.inner"]] * 2
    assert by_name["aten::relu"] == [["outer", "outer.inner"]]
    assert by_name["aten::cos"] == [["outer"]]
    assert by_name["aten::sin"] == [[]] and by_name["aten::tan"] == [[]]
    # the JSON's absolute times are those torch's own events report
    start_us = {e.name: e.time_range.start for e in prof.events()}
    trace_start = prof.profiler.kineto_results.trace_start_ns()
    for name in ("aten::sin", "aten::cos", "aten::tan"):
        (row,) = np.flatnonzero(ev["name"] == trace.name_id(name))
        assert abs(int(ev["start_ns"][row]) - (trace_start + round(start_us[name] * 1000))) <= 1


def test_time_join_on_random_nested_ops():
    """Launches with no External id join the innermost op around them, as brute force says."""
    rng = np.random.default_rng(7)
    events, ops = [], []
    corr = 0

    def fill(lo, hi, tid, depth):
        nonlocal corr
        t = lo
        while t < hi - 2:
            a = int(rng.integers(t, min(hi - 1, t + 40)))
            b = int(rng.integers(a, min(hi, a + 60) + 1))  # may be zero-length
            if rng.random() < 0.3 or depth > 5 or b - a < 4:
                if rng.random() < 0.5 and b > a:  # a launch, directly in the enclosing op
                    corr += 1
                    events.append(_x("cuda_runtime", "cudaLaunchKernel", a, b - a, tid=tid, correlation=corr))
                    events.append(_x("kernel", f"k{corr}", b + 5, 2, pid=0, tid=7, correlation=corr, device=0, stream=7))
                else:
                    ops.append((a, b, tid))
                    events.append(_x("cpu_op", f"leaf{len(ops)}", a, b - a, tid=tid))
            else:
                ops.append((a, b, tid))
                events.append(_x("cpu_op", f"op{len(ops)}", a, b - a, tid=tid))
                fill(a, b, tid, depth + 1)
            t = b + int(rng.integers(0, 3))

    for tid in (1, 2, 3):
        fill(0, 5000, tid, 0)
    rng.shuffle(events)
    trace = load_kineto({"traceEvents": events})
    ev = trace.events
    ks = trace.rows(Kind.KERNEL)
    assert len(ks) > 100
    for k in ks:
        rt = trace.launch[k]
        s, e, tid = ev["start_ns"][rt] // 1000, ev["end_ns"][rt] // 1000, ev["stream"][rt]
        around = [o for o in ops if o[2] == tid and o[0] <= s and e <= o[1]]
        o = ev["op"][k]
        if not around:
            assert o == -1
            continue
        best = min(b - a for a, b, _ in around)
        assert o >= 0 and ev["stream"][o] == tid
        assert (ev["end_ns"][o] - ev["start_ns"][o]) // 1000 == best
        assert ev["start_ns"][o] // 1000 <= s and e <= ev["end_ns"][o] // 1000
