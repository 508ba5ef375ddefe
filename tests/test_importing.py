"""phprof.tracing.importing: a Kineto trace and a power log CSV from elsewhere, as a phprof trace file.

Each real trace of ../shared/data/kineto is imported with a synthetic power log
written over its own time range; the file read back is compared with what
load_kineto gives and with the energy computed here from the CSV's numbers.
"""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

import phprof
from phprof.energy import Method
from phprof.sources import sensor_updates
from phprof.sources.csvlog import PowerCsvError, read_power_csv
from phprof.store import Kind
from phprof.tracing.importing import ClockMismatchError, TraceImportError, import_trace
from phprof.tracing.kineto import load_kineto

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kineto"
V100 = DATA / "v100-resnet-ns.json.gz"
A100 = DATA / "a100-alexnet.json.gz"
CPU_ONLY = DATA / "cpu-only.json.gz"
TRACES = [V100, A100, CPU_ONLY]

needs_data = pytest.mark.skipif(
    not V100.exists(), reason=f"real Kineto traces not found at {DATA} (the ../shared checkout is missing)"
)

_kineto_cache: dict[Path, object] = {}


def kineto(path: Path):
    """The reference: load_kineto with the step annotations left out of the scopes."""
    if path not in _kineto_cache:
        _kineto_cache[path] = load_kineto(path, scope_filter=lambda name: not name.startswith("ProfilerStep#"))
    return _kineto_cache[path]


def span_of(kt) -> tuple[int, int]:
    return int(kt.events["start_ns"].min()), int(kt.events["end_ns"].max())


def seconds_text(ns: int) -> str:
    """ns since the epoch as decimal seconds with all nine decimals."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def synthetic_times(t0: int, t1: int, step_ns: int = 10_000_000, seed: int = 0) -> np.ndarray:
    """Row times from 30 ms before t0 to 30 ms after t1, about every step_ns, jittered to the ns."""
    rng = np.random.default_rng(seed)
    n = (t1 - t0 + 60_000_000) // step_ns + 2
    gaps = step_ns + rng.integers(-step_ns // 3, step_ns // 3, n)
    return t0 - 30_000_000 + np.concatenate([[0], np.cumsum(gaps)])


def synthetic_watts(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{w:.3f}" for w in 150 + 120 * rng.random(n)]


def write_csv(path: Path, header: list[str], columns: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in zip(*columns)]
    path.write_text("\n".join(lines) + "\n")
    return path


def step_integral(times: np.ndarray, watts: list[str], a: int, b: int) -> float:
    """Joules of a power that holds each row's value until the next row, over [a, b]."""
    total = Decimal(0)
    for i in range(len(times) - 1):
        lo, hi = max(int(times[i]), a), min(int(times[i + 1]), b)
        if hi > lo:
            total += Decimal(watts[i]) * Decimal(hi - lo) / Decimal(10**9)
    return float(total)


def step_annotations(kt) -> np.ndarray:
    """The ProfilerStep#N annotations, in time order (read off the names, independently)."""
    ev = kt.events
    is_step = np.array([kt.names[i].startswith("ProfilerStep#") for i in ev["name"]], dtype=bool)
    return ev[is_step & (ev["kind"] == Kind.USER_ANNOTATION)]


# ----------------------------------------------------------------- real traces


@pytest.mark.integration
@needs_data
@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name.split(".")[0])
def test_import_real_trace(path, tmp_path):
    kt = kineto(path)
    t0, t1 = span_of(kt)
    times = synthetic_times(t0, t1)
    watts = synthetic_watts(len(times))
    csv_path = write_csv(tmp_path / "power.csv", ["timestamp_s", "power_w"],
                         [[seconds_text(int(t)) for t in times], watts])

    out = import_trace(path, csv_path, tmp_path / "imported.h5", model="someone's model")
    assert out == tmp_path / "imported.h5"
    tr = phprof.load(out)

    assert tr.status == "complete" and tr.complete and tr.schema_version == 1
    assert tr.meta["imported"] is True and tr.meta["model"] == "someone's model"
    assert tr.meta["source_files"] == {"kineto": path.name, "power_csv": "power.csv"}
    assert tr.meta["power_device"] == "gpu0" and "task" in tr.meta["unknown"]
    assert len(tr.phases) == 0 and len(tr.modules) == 0 and tr.idle is None

    # the same events as load_kineto's, less the step annotations (they are the inferences)
    steps = step_annotations(kt)
    gpu_steps = sum(1 for i in kt.events["name"][kt.events["kind"] == Kind.GPU_ANNOTATION]
                    if kt.names[i].startswith("ProfilerStep#"))
    assert len(tr.events) + len(steps) + gpu_steps == len(kt.events)
    assert tr.meta["step_annotations_dropped"] == len(steps) + gpu_steps
    for kind in Kind:
        dropped = len(steps) if kind == Kind.USER_ANNOTATION else gpu_steps if kind == Kind.GPU_ANNOTATION else 0
        assert int((tr.events["kind"] == kind).sum()) == int((kt.events["kind"] == kind).sum()) - dropped, kind.name
    assert int((tr.events["kind"] == Kind.KERNEL).sum()) == int((kt.events["kind"] == Kind.KERNEL).sum())

    # event by event: times, names, kinds, devices, streams
    keep = np.array([not kt.names[i].startswith("ProfilerStep#") for i in kt.events["name"]], dtype=bool)
    ref = kt.events[keep]
    assert np.array_equal(tr.events["start_ns"], ref["start_ns"]) and np.array_equal(tr.events["end_ns"], ref["end_ns"])
    assert [tr.strings[i] for i in tr.events["name"]] == [kt.names[i] for i in ref["name"]]
    for col in ("kind", "device", "stream"):
        assert np.array_equal(tr.events[col], ref[col]), col
    # scopes: the stack of every event names the same annotations
    assert tr.strings == kt.names and np.array_equal(tr.stacks["parent"], kt.stacks["parent"])
    assert np.array_equal(tr.stacks["scope"], kt.stacks["scope"])
    paths = [tr.stack_path(int(s)) for s in tr.events["stack"]]
    assert paths == [kt.stack_path(int(s)) for s in ref["stack"]]
    assert not any(scope.startswith("ProfilerStep#") for path in paths for scope in path)
    # launches: each device event's op is the same CPU op
    dev = np.isin(tr.events["kind"], [Kind.KERNEL, Kind.MEMCPY, Kind.MEMSET])
    assert int((tr.events["op"][dev] >= 0).sum()) == int((ref["op"][dev] >= 0).sum())
    joined = np.flatnonzero(dev & (tr.events["op"] >= 0))
    assert np.array_equal(tr.events["start_ns"][tr.events["op"][joined]], kt.events["start_ns"][ref["op"][joined]])

    # inferences: one per ProfilerStep, or one over the whole trace
    if len(steps):
        assert tr.meta["profiler_steps"] == [int(kt.names[i].split("#")[1]) for i in steps["name"]]
        assert list(tr.inferences["index"]) == list(range(len(steps)))
        assert np.array_equal(tr.inferences["cpu_start_ns"], steps["start_ns"])
        assert np.array_equal(tr.inferences["cpu_end_ns"], steps["end_ns"])
        # on the device, each span covers every one of its device events (kernels run on after
        # their step's CPU span), and the spans do not overlap
        inf = tr.inferences
        mine = np.flatnonzero(dev & (tr.events["inference"] >= 0))
        of = tr.events["inference"][mine]
        assert (tr.events["start_ns"][mine] >= inf["start_ns"][of]).all()
        assert (tr.events["end_ns"][mine] <= inf["end_ns"][of]).all()
        assert (inf["start_ns"][1:] >= inf["end_ns"][:-1]).all()
        assert inf["kernels"].tolist() == np.bincount(of[tr.events["kind"][mine] == Kind.KERNEL],
                                                      minlength=len(inf)).tolist()
        busy = np.bincount(of, minlength=len(inf)) > 0
        assert np.array_equal(inf["start_ns"][~busy], steps["start_ns"][~busy])
    else:
        assert tr.meta["profiler_steps"] == []
        assert len(tr.inferences) == 1 and (tr.inferences["start_ns"][0], tr.inferences["end_ns"][0]) == (t0, t1)
        assert (tr.events["inference"] == 0).all()
    assert len(tr.windows) == 1
    w = tr.windows[0]
    assert (w["first_inference"], w["last_inference"], w["events"]) == (0, len(tr.inferences) - 1, len(tr.events))

    # a CPU event is in the inference whose span holds it, else in none
    cpu = tr.events[tr.events["device"] < 0]
    for e in cpu:
        inf = tr.inferences
        holding = np.flatnonzero((inf["cpu_start_ns"] <= e["start_ns"]) & (e["end_ns"] <= inf["cpu_end_ns"]))
        assert e["inference"] == (holding[0] if len(holding) else -1)
    # a device event is in its launching op's inference
    launched = np.flatnonzero((tr.events["device"] >= 0) & (tr.events["op"] >= 0))
    assert np.array_equal(tr.events["inference"][launched], tr.events["inference"][tr.events["op"][launched]])

    # power: every row read exactly, and the energy is the integral of the CSV's power
    log = tr.power
    assert log.source == "csv" and [c.name for c in log.channels] == ["gpu0.power_instant"]
    assert log.channels[0].unit == "mW" and log.channels[0].quantity == "power"
    r = log.of("gpu0.power_instant")
    assert np.array_equal(r["t_before_ns"], times) and np.array_equal(r["t_after_ns"], times)
    assert np.array_equal(r["value"], [round(Decimal(w) * 1000) for w in watts])
    for a, b in [(t0, t1), (int(tr.inferences["start_ns"].min()), int(tr.inferences["end_ns"].max()))]:
        e = log.energy_between("gpu0", a, b)
        expected = step_integral(times, watts, a, b)
        # PowerLog interpolates on float64 times: ns since the epoch are resolved to 256 ns there
        assert e.joules == pytest.approx(expected, rel=1e-9, abs=1e-3)
        assert e.method is Method.INTEGRATED and e.detail == "gpu0.power_instant" and not e.measured
        assert e.energy.method_text == "integrated gpu0.power_instant"
    a, b = int(tr.inferences["start_ns"].min()), int(tr.inferences["end_ns"].max())
    assert tr.summary["energy_j"] == pytest.approx(step_integral(times, watts, a, b), rel=1e-9, abs=1e-3)
    assert tr.summary["inferences"] == len(tr.inferences)


@pytest.mark.integration
@needs_data
def test_steps_of_v100_and_events_outside(tmp_path):
    """The ResNet trace has five steps, 101 to 105; the CPU-only one a single step and
    gloo calls outside it on other threads."""
    for path, numbers, outside in [(V100, [101, 102, 103, 104, 105], None), (CPU_ONLY, [551], 12)]:
        kt = kineto(path)
        times = synthetic_times(*span_of(kt))
        csv_path = write_csv(tmp_path / f"{path.stem}.csv", ["timestamp_ns", "power_mw"],
                             [times, [200_000] * len(times)])
        tr = phprof.load(import_trace(path, csv_path, tmp_path / f"{path.stem}.h5"))
        assert tr.meta["profiler_steps"] == numbers
        assert tr.meta["inferences_from"] == "ProfilerStep annotations"
        if outside is not None:
            assert int((tr.events["inference"] < 0).sum()) == outside
            assert any(f"{outside} of" in n for n in tr.meta["notes"])


@pytest.mark.integration
@needs_data
def test_energy_counter_and_power_together(tmp_path):
    kt = kineto(V100)
    t0, t1 = span_of(kt)
    times = synthetic_times(t0, t1, step_ns=5_000_000)
    watts = synthetic_watts(len(times))
    joules = [Decimal(0)]
    for i in range(len(times) - 1):  # the counter: energy up to each row
        joules.append(joules[-1] + Decimal(watts[i]) * Decimal(int(times[i + 1] - times[i])) / Decimal(10**9))
    start_j = Decimal("81234.5")
    counter = [f"{start_j + j:.6f}" for j in joules]
    csv_path = write_csv(tmp_path / "both.csv", ["timestamp_ns", "power_w", "energy_j", "gpu_util"],
                         [times, watts, counter, ["97"] * len(times)])
    tr = phprof.load(import_trace(V100, csv_path, tmp_path / "both.h5"))
    log = tr.power
    assert [c.name for c in log.channels] == ["gpu0.energy", "gpu0.power_instant"]
    assert [c.unit for c in log.channels] == ["mJ", "mW"]
    assert log.settings["ignored_columns"] == ["gpu_util"]
    assert np.array_equal(log.of("gpu0.energy")["value"], [round(Decimal(c) * 1000) for c in counter])

    # between two rows, the counter's difference, within the one update at each end that
    # the unknown read brackets leave uncertain
    ia, ib = 10, len(times) - 10
    a, b = int(times[ia]), int(times[ib])
    e = log.energy_between("gpu0", a, b)
    assert e.method is Method.COUNTER and e.measured and e.channel == "gpu0.energy"
    assert e.energy.method_text == "energy counter"
    expected = float(Decimal(counter[ib]) - Decimal(counter[ia]))
    # one row's energy at each end at most (rows <= 6.7 ms apart, <= 270 W)
    assert e.uncertainty_j is not None and 0 < e.uncertainty_j <= 2 * 270 * np.diff(times).max() / 1e9
    assert abs(e.joules - expected) <= e.uncertainty_j + 2e-3
    # and close to the power log's integral over the same span
    assert e.joules == pytest.approx(step_integral(times, watts, a, b), abs=e.uncertainty_j + 2e-3)

    # the power field's updates: each change of value, halfway between the two rows around it
    inst, vals = sensor_updates(log.of("gpu0.power_instant"))
    mw = np.array([round(Decimal(w) * 1000) for w in watts])
    changed = np.flatnonzero(np.diff(mw) != 0) + 1
    assert np.array_equal(vals, mw[changed])
    assert np.array_equal(inst, (times[changed - 1] + times[changed]) // 2)


@pytest.mark.integration
@needs_data
def test_partial_overlap_imports_with_a_note(tmp_path):
    kt = kineto(V100)
    t0, t1 = span_of(kt)
    times = synthetic_times(t0 + (t1 - t0) // 2, t1 + 200_000_000)
    csv_path = write_csv(tmp_path / "late.csv", ["timestamp_ns", "power_w"], [times, synthetic_watts(len(times))])
    tr = phprof.load(import_trace(V100, csv_path, tmp_path / "late.h5"))
    assert tr.complete
    assert any("covers only" in n for n in tr.meta["notes"])
    assert any("does not cover every inference" in n for n in tr.meta["notes"])


@pytest.mark.integration
@needs_data
def test_non_overlapping_times_name_both_ranges(tmp_path):
    kt = kineto(V100)
    t0, t1 = span_of(kt)
    hour = 3600 * 10**9
    times = synthetic_times(t0 - 2 * hour, t0 - hour, step_ns=10**9)  # an hour of rows, one a second
    csv_path = write_csv(tmp_path / "early.csv", ["timestamp_ns", "power_w"], [times, synthetic_watts(len(times))])
    out = tmp_path / "never.h5"
    with pytest.raises(ClockMismatchError) as info:
        import_trace(V100, csv_path, out)
    msg = str(info.value)
    utc = lambda ns: datetime.fromtimestamp(ns // 10**9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    for instant in (t0, t1, int(times[0]), int(times[-1])):
        assert utc(instant) in msg
    assert "UTC" in msg and "do not overlap" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, TraceImportError)
    assert not out.exists()


# ------------------------------------------------------------------ bad CSVs


def test_relative_seconds_are_rejected(tmp_path):
    p = write_csv(tmp_path / "rel.csv", ["time", "power_w"], [[f"{0.01 * i:.2f}" for i in range(50)], ["100"] * 50])
    with pytest.raises(PowerCsvError, match="relative or monotonic"):
        read_power_csv(p)


@needs_data
def test_relative_seconds_stop_the_import(tmp_path):
    p = write_csv(tmp_path / "rel.csv", ["timestamp_s", "power_w"],
                  [[f"{1234.5 + 0.01 * i:.2f}" for i in range(50)], ["100"] * 50])
    out = tmp_path / "never.h5"
    with pytest.raises(PowerCsvError, match="CLOCK_REALTIME"):
        import_trace(CPU_ONLY, p, out)
    assert not out.exists()


def test_wrong_unit_gets_a_hint(tmp_path):
    ms = [1712195495502 + 10 * i for i in range(5)]  # milliseconds, named as seconds
    p = write_csv(tmp_path / "ms.csv", ["timestamp", "power_w"], [ms, ["100"] * 5])
    with pytest.raises(PowerCsvError, match="after the year 2100.*timestamp_ms"):
        read_power_csv(p)
    s = [1712195495 + i for i in range(5)]  # seconds, named as nanoseconds
    p = write_csv(tmp_path / "s.csv", ["timestamp_ns", "power_w"], [s, ["100"] * 5])
    with pytest.raises(PowerCsvError, match="relative or monotonic.*timestamp_s"):
        read_power_csv(p)


def test_decimal_times_keep_nanoseconds(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["Timestamp_MS", "Energy_mJ"],
                  [["1712195495502.094565", "1712195495512.000001", "1712195495522"], ["10", "2000", "4000"]])
    log = read_power_csv(p, device="gpu3")
    assert list(log.readings["t_after_ns"]) == [1712195495502094565, 1712195495512000001, 1712195495522000000]
    assert [c.name for c in log.channels] == ["gpu3.energy"]
    assert log.settings["time_unit"] == "ms"
    p = write_csv(tmp_path / "s.csv", ["time", "power_w"],
                  [["1712195495.502094565", "1712195495.6", "1712195495.7000000005", "1.7121954958e9"], list("1234")])
    assert list(read_power_csv(p).readings["t_after_ns"]) == [
        1712195495502094565, 1712195495600000000, 1712195495700000001, 1712195495800000000
    ]


def test_garbage_cell_names_its_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("timestamp_ns,power_w\n1712195495000000000,100\n1712195495010000000,101\n"
                 "1712195495020000000,n/a\n1712195495030000000,103\n")
    with pytest.raises(PowerCsvError, match=r"line 4: power_w = 'n/a' is not a number"):
        read_power_csv(p)
    p.write_text("timestamp_ns,power_w\n1712195495000000000,100\nyesterday,101\n")
    with pytest.raises(PowerCsvError, match=r"line 3: timestamp_ns = 'yesterday' is not a number"):
        read_power_csv(p)
    p.write_text("timestamp_ns,power_w\n1712195495000000000,100\n1712195495010000000,nan\n")
    with pytest.raises(PowerCsvError, match="line 3.*not a finite number"):
        read_power_csv(p)
    p.write_text("timestamp_ns,power_w\n1712195495000000000,100\n1712195495010000000\n")
    with pytest.raises(PowerCsvError, match="line 3: 1 cells where the header has 2"):
        read_power_csv(p)


@pytest.mark.parametrize("bad", ["yesterday", "nan", "", "1712195495.5.1", "12:00:01"])
def test_a_bad_time_cell_names_its_line(tmp_path, bad):
    """The times are read in one go (phprof.clock.decimal_text_to_ns); a bad one is still
    reported with its line in the file, blank lines counted."""
    rows = [f"{1712195495 + i}.{i:09d},{100 + i}" for i in range(6000)]  # more than one chunk of the reader
    rows[4321] = f"{bad},150"
    p = tmp_path / "bad.csv"
    p.write_text("timestamp_s,power_w\n" + "\n".join(rows[:10]) + "\n\n" + "\n".join(rows[10:]) + "\n")
    with pytest.raises(PowerCsvError, match=rf"line 4324: timestamp_s = {bad!r} is not a number"):
        read_power_csv(p)


def test_times_beyond_an_int64_of_nanoseconds_are_a_wrong_unit(tmp_path):
    """ms since the epoch named as seconds would not fit an int64 of ns: said as a wrong unit."""
    us = [1712195495502094 + 10_000 * i for i in range(5)]
    p = write_csv(tmp_path / "us.csv", ["time", "power_w"], [us, ["100"] * 5])
    with pytest.raises(PowerCsvError, match="after the year 2100.*timestamp_us"):
        read_power_csv(p)


@pytest.mark.parametrize(
    "text, match",
    [
        ("when,power_w\n1,2\n", "no time column"),
        ("timestamp_ns,gpu_util\n1712195495000000000,90\n1712195495010000000,91\n", "no value column"),
        ("timestamp_ns,power_w,power_mw\n1712195495000000000,1,1000\n1712195495010000000,1,1000\n", "keep one power"),
        ("timestamp_ns,power_w\n1712195495000000000,100\n", "at least 2"),
        ("", "empty"),
        ("timestamp_ns,power_w\n1712195495010000000,100\n1712195495010000000,101\n", "line 3.*strictly increasing"),
        ("timestamp_ns,energy_j\n1712195495000000000,5\n1712195495010000000,-1\n", "line 3.*negative"),
    ],
    ids=["no-time", "no-value", "two-power", "one-row", "empty", "repeated-time", "negative"],
)
def test_bad_csv(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(PowerCsvError, match=match):
        read_power_csv(p)


def test_missing_files(tmp_path):
    with pytest.raises(PowerCsvError, match="no such power log CSV"):
        read_power_csv(tmp_path / "nope.csv")
    p = write_csv(tmp_path / "ok.csv", ["timestamp_ns", "power_w"],
                  [[1712195495000000000, 1712195495010000000], [1, 2]])
    with pytest.raises(TraceImportError, match="no such Kineto trace"):
        import_trace(tmp_path / "nope.json.gz", p, tmp_path / "out.h5")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(TraceImportError, match="not a torch.profiler Chrome trace"):
        import_trace(tmp_path / "junk.json", p, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


@needs_data
def test_output_is_not_overwritten_unless_asked(tmp_path):
    kt = kineto(CPU_ONLY)
    times = synthetic_times(*span_of(kt))
    p = write_csv(tmp_path / "p.csv", ["timestamp_ns", "power_w"], [times, synthetic_watts(len(times))])
    out = tmp_path / "o.h5"
    out.write_text("precious")
    with pytest.raises(TraceImportError, match="exists"):
        import_trace(CPU_ONLY, p, out)
    assert out.read_text() == "precious"
    import_trace(CPU_ONLY, p, out, overwrite=True)
    assert phprof.load(out).complete


@needs_data
def test_plain_json_trace(tmp_path):
    """An uncompressed .json is read too."""
    plain = tmp_path / "cpu-only.json"
    plain.write_bytes(gzip.open(CPU_ONLY).read())
    json.loads(plain.read_text())  # it is the same JSON
    times = synthetic_times(*span_of(kineto(CPU_ONLY)))
    p = write_csv(tmp_path / "p.csv", ["timestamp_ns", "power_w"], [times, synthetic_watts(len(times))])
    tr = phprof.load(import_trace(plain, p, tmp_path / "o.h5"))
    assert len(tr.events) == len(kineto(CPU_ONLY).events) - 1
