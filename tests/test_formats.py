"""Folded stacks, speedscope and Perfetto files (phprof.render.formats): what other tools read;
and the one registry that picks a view's format (``phprof.render``: by name, by file name)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import phprof
from phprof.render import Flamegraph, RenderError, Renderer, format_names, format_of
from phprof.render.flamegraph import embedded_data
from phprof.render.formats import parse_folded, to_folded, to_perfetto, to_speedscope
from phprof.render.frames import frame_tree
from phprof.store import DEVICE_KINDS, Kind
from phprof.store.results import Role
from phprof.tracing.kineto import load_kineto
from power_logs import power_csv

DATA = Path(__file__).resolve().parent / "data"
KINETO = Path(__file__).resolve().parents[2] / "shared" / "data" / "kineto"


# ---------------------------------------------------------------- a tree by hand


def _frame(name, path, self_j, children=(), kind="other"):
    children = list(children)
    return {"name": name, "path": path, "kind": kind, "self_j": self_j,
            "energy_j": self_j + sum(c["energy_j"] for c in children), "seconds": 0.0, "self_s": 0.0,
            "low_j": None, "high_j": None, "calls": 1, "method": "test", "children": children}


def _tree():
    """Own energies in µJ: all 1, transformer 0 (left out), h.0 2.6, attn 1000, its kernel 0.4
    (rounds to 0: left out), a;b 7, mlp 123456.7, lm_head 10.4."""
    attn = _frame("attn", "transformer.h.0.attn", 1000e-6, [
        _frame("gemm;kernel\nv2", "gemm;kernel\nv2", 0.4e-6, kind="kernel"),
    ], kind="attention")
    odd = _frame("a;b", "transformer.h.0.a;b", 7e-6)
    mlp = _frame("mlp", "transformer.h.0.mlp", 0.1234567, kind="mlp")
    h0 = _frame("h.0", "transformer.h.0", 2.6e-6, [attn, odd, mlp])
    transformer = _frame("transformer", "transformer", 0.0, [h0])
    head = _frame("lm_head", "lm_head", 10.4e-6, kind="head")
    root = _frame("all", "all", 1e-6, [transformer, head])
    return {"title": "gpt2 (tiny), cpu", "unit": "J", "inferences": 3, "interval": 0.9,
            "total_j": root["energy_j"], "root": root}


EXPECTED_FOLDED = {
    "all": 1,
    "all;transformer;h.0": 3,
    "all;transformer;h.0;attn": 1000,
    "all;transformer;h.0;a:b": 7,
    "all;transformer;h.0;mlp": 123457,
    "all;lm_head": 10,
}


def test_folded_stacks_are_integer_microjoules_of_each_frames_own_energy():
    tree = _tree()
    text = to_folded(tree)
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == len(EXPECTED_FOLDED)
    # depth first, in the tree's order; zero and sub-µJ frames left out; ';' and newlines never inside a name
    assert [ln.rsplit(" ", 1)[0] for ln in lines] == list(EXPECTED_FOLDED)
    assert all(ln.rsplit(" ", 1)[1].isdigit() for ln in lines)
    assert parse_folded(text) == EXPECTED_FOLDED
    # the counts add up to the total, within rounding (half a µJ per frame, frames left out included)
    assert abs(sum(parse_folded(text).values()) - round(tree["total_j"] * 1e6)) <= len(lines)


def test_folded_names_cannot_break_the_format():
    tree = _tree()
    tree["root"]["children"][1]["name"] = "weird;name\r\nwith lines"
    tree["root"]["children"][1]["children"] = [_frame("", "", 5e-6)]
    parsed = parse_folded(to_folded(tree))
    assert parsed["all;weird:name with lines"] == 10
    assert parsed["all;weird:name with lines;?"] == 5  # an empty name is still a frame
    assert all(len(stack.split(";")) <= 4 for stack in parsed)


def test_negative_or_missing_own_energy_is_left_out():
    tree = _tree()
    tree["root"]["children"][1]["self_j"] = -3e-6
    tree["root"]["self_j"] = None
    assert set(parse_folded(to_folded(tree))) == set(EXPECTED_FOLDED) - {"all", "all;lm_head"}


def test_parse_folded_adds_repeated_stacks_and_refuses_lines_without_a_count():
    assert parse_folded("a;b 3\n\na;b 4\na;c d 1\n") == {"a;b": 7, "a;c d": 1}
    with pytest.raises(ValueError, match="line 2"):
        parse_folded("a;b 3\na;b three\n")
    with pytest.raises(ValueError, match="line 1"):
        parse_folded("17\n")


# ---------------------------------------------------------------- speedscope


@pytest.fixture(scope="module")
def speedscope_schema():
    """The official schema, vendored from the speedscope npm package (tests/data/README.md)."""
    return json.loads((DATA / "speedscope-file-format-schema.json").read_text())


def test_speedscope_file_follows_the_official_schema(speedscope_schema):
    tree = _tree()
    doc = to_speedscope(tree)
    jsonschema.validate(doc, speedscope_schema)
    json.dumps(doc)  # JSON-ready
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert doc["exporter"] == f"phprof {phprof.__version__}" and doc["name"] == tree["title"]
    (profile,) = doc["profiles"]
    assert profile["type"] == "sampled" and profile["unit"] == "none"
    assert "µJ" in profile["name"] and tree["title"] in profile["name"]
    assert profile["startValue"] == 0 and profile["endValue"] == sum(profile["weights"])
    assert all(isinstance(w, int) for w in profile["weights"])
    # the samples are the folded stacks, frame by frame
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert len(names) == len(set(names))
    stacks = {";".join(names[i] for i in s): w for s, w in zip(profile["samples"], profile["weights"])}
    assert stacks == EXPECTED_FOLDED


def test_the_schema_check_can_fail(speedscope_schema):
    """The vendored schema does reject what speedscope would: a unit it does not know, a
    profile with no weights."""
    doc = to_speedscope(_tree())
    bad_unit = json.loads(json.dumps(doc))
    bad_unit["profiles"][0]["unit"] = "joules"
    no_weights = json.loads(json.dumps(doc))
    del no_weights["profiles"][0]["weights"]
    for bad in (bad_unit, no_weights):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, speedscope_schema)


def test_an_empty_tree_is_still_a_valid_file(speedscope_schema):
    tree = {"title": "nothing", "unit": "J", "inferences": 1, "interval": 0.9, "total_j": 0.0,
            "root": _frame("all", "all", 0.0)}
    assert to_folded(tree) == "" and parse_folded("") == {}
    doc = to_speedscope(tree)
    jsonschema.validate(doc, speedscope_schema)
    assert doc["profiles"][0]["samples"] == [] and doc["profiles"][0]["endValue"] == 0


# ---------------------------------------------------------------- perfetto


def _power_csv(path: Path, t0_ns: int, t1_ns: int) -> Path:
    """Instant power every ms on the trace's clock, 200 W and 250 W alternating every 7 ms."""
    return power_csv(path, t0_ns, t1_ns, watts=lambda i, t: 200.0 + 50.0 * ((i // 7) % 2))


@pytest.fixture(scope="module")
def gpu_file(tmp_path_factory):
    """The V100 ResNet Kineto trace imported with a power log (so it has energy)."""
    work = tmp_path_factory.mktemp("formats-gpu")
    kt = load_kineto(KINETO / "v100-resnet-ns.json.gz")
    t0, t1 = int(kt.events["start_ns"].min()), int(kt.events["end_ns"].max())
    return phprof.import_trace(KINETO / "v100-resnet-ns.json.gz", _power_csv(work / "p.csv", t0, t1), work / "v.h5")


@pytest.fixture(scope="module")
def gpu_trace(gpu_file):
    return phprof.load(gpu_file)


@pytest.fixture(scope="module")
def gpu_view(gpu_file):
    """Its flamegraph view (attributed once, stored in the file)."""
    view = phprof.flamegraph(gpu_file)
    assert view.results.has_energy
    return view


@pytest.fixture(scope="module")
def cpu_file(tmp_path_factory, traced_without_power):
    """A tiny gpt2 traced on the CPU with no power sensor: CPU ops and annotations, no kernels
    (the session's, conftest.py; copied, since the flamegraph stores its results in the file).
    A real model under torch.profiler: the tests using it are the ``integration`` tier."""
    out = tmp_path_factory.mktemp("formats-cpu") / "gpt2.h5"
    shutil.copy(traced_without_power("gpt2", "text-generation")[0], out)
    return out


@pytest.fixture(scope="module")
def cpu_trace(cpu_file):
    return phprof.load(cpu_file)


@pytest.fixture(scope="module")
def cpu_view(cpu_file):
    """Its flamegraph view: no power readings, so a tree of times only."""
    view = phprof.flamegraph(cpu_file)
    assert not view.results.has_energy
    return view


def _round_trip(trace_file, path: Path, **kw):
    path.write_text(json.dumps(to_perfetto(trace_file, **kw)))
    return load_kineto(path)


def _sorted(events: np.ndarray, kinds) -> np.ndarray:
    ev = events[np.isin(events["kind"], np.asarray(kinds, np.uint8))]
    return ev[np.lexsort((ev["end_ns"], ev["start_ns"]))]


@pytest.mark.integration
def test_perfetto_of_a_gpu_trace_keeps_every_kernel_to_the_nanosecond(gpu_trace, tmp_path):
    doc = to_perfetto(gpu_trace)
    assert doc["displayTimeUnit"] == "ns" and isinstance(doc["baseTimeNanoseconds"], int)
    back = _round_trip(gpu_trace, tmp_path / "v.perfetto.json")
    assert back.exact_ns and back.base_time_ns == doc["baseTimeNanoseconds"]
    mine, theirs = _sorted(gpu_trace.events, DEVICE_KINDS), _sorted(back.events, DEVICE_KINDS)
    assert len(mine) > 1000 and len(theirs) == len(mine)
    for field in ("start_ns", "end_ns", "kind", "device", "stream"):
        assert (theirs[field] == mine[field]).all(), field
    assert [gpu_trace.strings[i] for i in mine["name"]] == back.names_of(theirs["name"]).tolist()
    # each device event still knows its launching op (through its External id)
    assert back.join_stats["unjoined"] == int((mine["op"] < 0).sum())
    op_names = [gpu_trace.strings[gpu_trace.events["name"][o]] for o in mine["op"] if o >= 0]
    assert back.names_of(back.events["name"][theirs["op"][theirs["op"] >= 0]]).tolist() == op_names
    # the CPU side too
    for kinds in ([Kind.CPU_OP], [Kind.RUNTIME]):
        a, b = _sorted(gpu_trace.events, kinds), _sorted(back.events, kinds)
        assert len(a) == len(b) and (a["start_ns"] == b["start_ns"]).all() and (a["end_ns"] == b["end_ns"]).all()


@pytest.mark.integration
def test_perfetto_times_are_kinetos_relative_microseconds_with_three_decimals(gpu_view, tmp_path):
    path = tmp_path / "v.trace.json"
    assert phprof.render(gpu_view, path) == path
    raw = json.loads(path.read_text(), parse_float=str)  # the number texts as written
    texts = [e["ts"] for e in raw["traceEvents"] if e["ph"] in "XC"]
    texts += [e["dur"] for e in raw["traceEvents"] if e["ph"] == "X"]
    assert all(len(t.partition(".")[2]) <= 3 for t in texts if isinstance(t, str))
    assert min(float(t) for t in texts) >= 0  # relative to the base, which no event precedes


@pytest.mark.integration
def test_perfetto_draws_the_instant_power_as_a_counter_track_above_the_kernels(gpu_trace):
    doc = to_perfetto(gpu_trace)
    ev = doc["traceEvents"]
    counters = [e for e in ev if e["ph"] == "C"]
    assert len(counters) > 50
    assert {e["name"] for e in counters} == {"power (W)"}
    assert {e["args"]["W"] for e in counters} == {200.0, 250.0}
    ts = [e["ts"] for e in counters]
    assert ts == sorted(ts)
    # one value per sensor update: consecutive counter values differ (but for the last reading)
    values = [e["args"]["W"] for e in counters]
    assert all(a != b for a, b in zip(values[:-2], values[1:-1]))
    # its own process, sorted above the CPU and the devices
    power_pids = {e["pid"] for e in counters}
    kernel_pids = {e["pid"] for e in ev if e.get("cat") == "kernel"}
    cpu_pids = {e["pid"] for e in ev if e.get("cat") == "cpu_op"}
    assert kernel_pids == {0} and power_pids.isdisjoint(kernel_pids | cpu_pids)
    sort = {e["pid"]: e["args"]["sort_index"] for e in ev if e["name"] == "process_sort_index"}
    assert max(sort[p] for p in power_pids) < min(v for p, v in sort.items() if p not in power_pids)
    # the counter spans the power log: the first reading's value starts the track
    readings = gpu_trace.power.of("gpu0.power_instant")
    first_us = ((int(readings["t_after_ns"][0]) - doc["baseTimeNanoseconds"]) / 1000)
    assert ts[0] == pytest.approx(first_us, abs=1e-3)
    with pytest.raises(ValueError, match="gpu0"):
        to_perfetto(gpu_trace, device="gpu7")
    assert len([e for e in to_perfetto(gpu_trace, device="gpu0")["traceEvents"] if e["ph"] == "C"]) == len(counters)


@pytest.mark.integration
def test_perfetto_of_a_cpu_trace_has_its_ops_and_inferences(cpu_trace, tmp_path):
    back = _round_trip(cpu_trace, tmp_path / "gpt2.perfetto.json")
    mine, theirs = _sorted(cpu_trace.events, [Kind.CPU_OP]), _sorted(back.events, [Kind.CPU_OP])
    assert len(mine) > 10 and len(theirs) == len(mine)
    assert (theirs["start_ns"] == mine["start_ns"]).all() and (theirs["end_ns"] == mine["end_ns"]).all()
    assert (theirs["stream"] == mine["stream"]).all()  # the thread
    assert not np.isin(back.events["kind"], np.asarray(DEVICE_KINDS, np.uint8)).any()
    # the module scopes, and an annotation per inference with the inference's own span
    names = back.names_of(back.events["name"]).tolist()
    assert "transformer.h.0.attn" in names
    ann = back.events[back.events["kind"] == Kind.USER_ANNOTATION]
    spans = {back.name_of(a["name"]): (a["start_ns"], a["end_ns"]) for a in ann
             if back.name_of(a["name"]).startswith("phprof.inference.")}
    inf = cpu_trace.inferences
    assert spans == {f"phprof.inference.{i}": (s, e) for i, s, e in zip(inf["index"], inf["start_ns"], inf["end_ns"])}
    # on the thread of its ops, so load_kineto makes each inference a scope
    scopes = back.names_of(back.stacks["scope"][1:]).tolist()
    assert any(s.startswith("phprof.inference.") for s in scopes)
    # no sensor: no counter track, and asking for one says why
    assert not [e for e in to_perfetto(cpu_trace)["traceEvents"] if e["ph"] == "C"]
    with pytest.raises(ValueError, match="no power"):
        to_perfetto(cpu_trace, device="gpu0")


# ---------------------------------------------------------------- a trace without energy


@pytest.mark.integration
def test_folded_and_speedscope_of_a_trace_without_energy_count_microseconds(cpu_view):
    """No power readings: the frames are the layers' times, and the counts integer µs."""
    r = cpu_view.results
    tree = frame_tree(r)
    assert tree["measure"] == "time" and tree["total_j"] is None and "time, energy not measured" in tree["title"]
    folded = parse_folded(phprof.render(cpu_view, "folded"))
    assert folded == parse_folded(to_folded(tree)) and len(folded) > 10
    # every count is a frame's own time in µs; together, the inferences' time per layer
    seconds = sum(x.seconds for x in r.layers if not x.role.between_inferences)
    assert abs(sum(folded.values()) - round(seconds * 1e6)) <= len(folded)
    outside = next(x for x in r.layers if x.role is Role.OUTSIDE_MODULES)
    own = outside.seconds - sum(leaf.seconds for leaf in r.leaves if leaf.layer == outside.label)
    assert folded["all;inference"] == round(own * 1e6)
    doc = json.loads(phprof.render(cpu_view, "speedscope"))
    (profile,) = doc["profiles"]
    assert "µs" in profile["name"] and "µJ" not in profile["name"]
    assert dict(zip((";".join(doc["shared"]["frames"][i]["name"] for i in s) for s in profile["samples"]),
                    profile["weights"])) == folded


# ---------------------------------------------------------------- render: the registry


@pytest.mark.parametrize("name, fmt", [
    ("x.folded", "folded"),
    ("x.speedscope.json", "speedscope"),
    ("x.perfetto.json", "perfetto"),
    ("run.pt.trace.json", "perfetto"),
    ("flame.html", "html"),
])
@pytest.mark.parametrize("which", ["gpu", pytest.param("cpu", marks=pytest.mark.integration)])
def test_render_chooses_the_format_by_the_file_name(name, fmt, which, request, tmp_path):
    """For a view with energy (the imported GPU trace) and one of times only (the CPU trace)."""
    view, trace = request.getfixturevalue(f"{which}_view"), request.getfixturevalue(f"{which}_trace")
    assert format_of("flamegraph", name) == fmt
    path = phprof.render(view, tmp_path / name)
    assert path == tmp_path / name
    text = path.read_text(encoding="utf-8")
    tree = frame_tree(view.results)
    if fmt == "folded":
        assert parse_folded(text) == parse_folded(to_folded(tree)) and text
    elif fmt == "speedscope":
        assert json.loads(text) == to_speedscope(tree)
    elif fmt == "html":
        data = re.search(r'<script type="application/json" id="phprof-data">(.*?)</script>', text, re.S).group(1)
        assert text.startswith("<!DOCTYPE html>") and json.loads(data) == json.loads(json.dumps(embedded_data(tree)))
    else:
        expected = len(trace.events) + len(trace.inferences) + len(trace.phases)
        assert len(load_kineto(path).events) == expected
    assert text == phprof.render(view, fmt)  # a file holds what the format's name returns


@pytest.mark.integration
def test_render_takes_an_explicit_format_and_refuses_unknown_ones(gpu_view, tmp_path):
    path = phprof.render(gpu_view, tmp_path / "stacks.txt", fmt="folded")
    assert parse_folded(path.read_text()) == parse_folded(to_folded(frame_tree(gpu_view.results)))
    # a name no format of the view ends with: refused, naming every known format with its endings
    for name in ("x.json", "x.svg", "flame.htm"):
        with pytest.raises(RenderError, match="known formats") as e:
            phprof.render(gpu_view, tmp_path / name)
        assert name in str(e.value)
        for fmt in format_names("flamegraph"):
            assert fmt in str(e.value)
        assert "html (.html); folded (.folded); speedscope (.speedscope.json); perfetto (.perfetto.json, " \
               ".trace.json)" in str(e.value)
        assert not (tmp_path / name).exists()
    with pytest.raises(RenderError, match="known formats"):
        phprof.render(gpu_view, tmp_path / "x.folded", fmt="svg")
    with pytest.raises(RenderError, match="known formats"):
        format_of("flamegraph", "x.svg")
    # the timeline needs the trace itself, not only its results
    with pytest.raises(ValueError, match="trace"):
        phprof.render(Flamegraph(gpu_view.results), tmp_path / "x.perfetto.json")
    with pytest.raises(TypeError, match="nothing renders"):
        phprof.render(gpu_view.results, "folded")


@pytest.mark.integration
def test_render_refuses_a_missing_folder(gpu_view, tmp_path):
    for name in ("x.folded", "x.html"):
        with pytest.raises(RenderError, match="does not exist") as e:
            phprof.render(gpu_view, tmp_path / "no-such-folder" / name)
        assert "no-such-folder" in str(e.value)
    assert not (tmp_path / "no-such-folder").exists()


@pytest.fixture(scope="module")
def gpu_report(gpu_file, gpu_view):
    return phprof.report(gpu_file)


@pytest.mark.integration
def test_a_reports_json_file_and_its_options(gpu_report, gpu_view, tmp_path):
    """``.json`` of a report is its JSON (``.json`` of a flamegraph is no format: above);
    ``top`` is a text / markdown / html option a JSON report ignores (it holds every row);
    an option no format of the view takes is a TypeError."""
    assert format_of("report", "r.json") == "json" and format_of("report", "r.speedscope.json") == "json"
    text = phprof.render(gpu_report, "json")
    data = json.loads(text)
    assert set(data) == {"summary", "rollups", "tables"}
    assert len(data["tables"]["layers"]["label"]) == len(gpu_report.results.layers) > 3
    path = phprof.render(gpu_report, tmp_path / "r.json", top=3)
    assert path.read_text(encoding="utf-8") == text == phprof.render(gpu_report, "json", top=3)
    # top does change the formats that take it
    assert phprof.render(gpu_report, "text", top=3) != phprof.render(gpu_report, "text")
    assert phprof.render(gpu_report, "text") == phprof.render(gpu_report, "text", top=15)
    for view, fmt, option in ((gpu_report, "json", "min_share"), (gpu_report, "text", "bogus"),
                              (gpu_view, "folded", "top"), (gpu_view, "html", "warnings")):
        with pytest.raises(TypeError, match=option):
            phprof.render(view, fmt, **{option: 1})
        with pytest.raises(TypeError, match=option):
            phprof.render(view, tmp_path / f"y.{fmt}", fmt=fmt, **{option: 1})
    assert not list(tmp_path.glob("y.*"))
    # a flamegraph option another of its formats takes: ignored by folded
    assert phprof.render(gpu_view, "folded", min_share=0.5) == phprof.render(gpu_view, "folded")


class _View:
    VIEW = "test-view"


def test_the_longest_matching_ending_chooses(monkeypatch, tmp_path):
    """Two formats of one view where one's ending ends the other's: the longer wins."""
    from phprof.render import base

    class Plain(Renderer):
        view, name, suffixes = "test-view", "json", (".json",)
        options = {"indent": 0}

        def render(self, view):
            return f"plain {self.indent}"

    class Special(Renderer):
        view, name, suffixes = "test-view", "speedscope", (".speedscope.json",)
        options = {"weights": None}

        def render(self, view):
            return "special"

    base.renderers("test-view")  # the real renderers loaded first
    monkeypatch.setattr(base, "RENDERERS", base.RENDERERS + [Plain, Special])
    assert format_names("test-view") == ["json", "speedscope"]
    assert format_of("test-view", "a.speedscope.json") == "speedscope"
    assert format_of("test-view", "a.json") == "json" and format_of("test-view", "A.SPEEDSCOPE.JSON") == "speedscope"
    assert phprof.render(_View(), tmp_path / "a.speedscope.json", weights=1).read_text() == "special"
    assert phprof.render(_View(), tmp_path / "a.json", indent=2).read_text() == "plain 2"
    assert phprof.render(_View(), "json", weights=1) == "plain 0"  # the other format's option: ignored
    with pytest.raises(TypeError, match="colour"):
        phprof.render(_View(), "json", colour=1)
    with pytest.raises(TypeError, match="weights"):
        Plain(weights=1)  # a renderer itself takes only its own options
