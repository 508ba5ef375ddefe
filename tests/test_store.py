"""The trace file: what is written is what is read (its tables and the typed results), and a run cut
short stays readable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import fields, replace

import h5py
import numpy as np
import pytest

from phprof.energy import Energy, Method
from phprof.sources import READING_DTYPE, Channel, PowerLog, SensorModel
from phprof.store import (EVENT_DTYPE, INFERENCE_DTYPE, PHASE_DTYPE, STACK_DTYPE, TraceFileError, TraceWriter, load,
                          write_results)
from phprof.store.results import (RESULTS_VERSION, Carbon, ComponentEnergy, DeviceEnergy, Group, KernelEnergy, Layer,
                                  Leaf, PassEnergy, PhaseEnergy, Results, Role, Rollups, from_tables, to_tables)

CHANNELS = (Channel("gpu0.energy", "gpu0", "energy", "mJ", "NVML total energy counter"),)


def power_chunk(t0: int, n: int, mj0: int) -> PowerLog:
    r = np.zeros(n, READING_DTYPE)
    r["t_before_ns"] = t0 + np.arange(n) * 1_000_000
    r["t_after_ns"] = r["t_before_ns"] + 500
    r["value"] = mj0 + np.arange(n) * 100
    return PowerLog("nvml", CHANNELS, r, np.array([[1, t0]]), {"interval_ns": 1_000_000})


def window(writer: TraceWriter, first: int, n: int) -> None:
    writer.append_strings([f"op{first}"])
    writer.append_stacks(np.array([(0, 1)], STACK_DTYPE) if first == 0 else np.empty(0, STACK_DTYPE))
    ev = np.zeros(n, EVENT_DTYPE)
    ev["inference"] = np.arange(first, first + n)
    ev["start_ns"] = ev["inference"] * 10
    ev["end_ns"] = ev["start_ns"] + 5
    inf = np.zeros(n, INFERENCE_DTYPE)
    inf["index"] = ev["inference"]
    ph = np.zeros(n, PHASE_DTYPE)
    ph["inference"] = ev["inference"]
    writer.append_window(ev, inf, ph, (first // n, first, first + n - 1, 0, 1, n))


def test_round_trip(tmp_path):
    path = tmp_path / "t.h5"
    w = TraceWriter(path, {"model": "gpt2", "config": {"n_layer": 12}, "units": {"time": "ns"}})
    w.append_power(power_chunk(1_000, 5, 7_000), group="idle")
    for first in (0, 3):
        window(w, first, 3)
        w.append_power(power_chunk(10_000_000 * (first + 1), 4, 8_000 + 1_000 * first))
    odd = {"none": None, "null_text": "null", "json_text": "[1, 2]", "quoted": '"x"', "nested": {"a": [None, 1.5]}}
    w.close("complete", {"energy_j": 1.5, **odd})
    t = load(path)
    assert t.complete and t.status == "complete" and t.schema_version == 1
    assert t.meta["model"] == "gpt2" and t.meta["config"] == {"n_layer": 12}
    assert t.strings == ["", "op0", "op3"]
    assert t.stack_path(1) == ["op0"]
    assert list(t.events["inference"]) == list(range(6)) and len(t.windows) == 2
    assert len(t.power.readings) == 8 and t.power.channels == CHANNELS and len(t.power.clock_pairs) == 2
    assert len(t.idle.readings) == 5
    assert t.summary == {"energy_j": 1.5, **odd}  # None stays None, text stays text
    expected = np.concatenate([power_chunk(10_000_000 * (f + 1), 4, 8_000 + 1_000 * f).readings for f in (0, 3)])
    assert np.array_equal(t.power.readings, expected)


def test_every_table_is_chunked_and_compressed(tmp_path):
    path = tmp_path / "t.h5"
    w = TraceWriter(path, {})
    window(w, 0, 2)
    w.close("complete")
    with h5py.File(path) as f:
        for name in ("strings", "stacks", "events", "inferences", "phases", "windows"):
            assert f[name].chunks and f[name].compression == "gzip", name


def test_a_killed_writer_leaves_the_finished_windows_marked_incomplete(tmp_path):
    path = tmp_path / "t.h5"
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from phprof.store import TraceWriter
        from test_store_helpers import window
        w = TraceWriter({str(path)!r}, {{"model": "m"}})
        window(w, 0, 3)
        w.flush()
        os._exit(9)   # no close(): killed mid-run
        """
    )
    (tmp_path / "test_store_helpers.py").write_text(
        "import numpy as np\nfrom phprof.store import *\n" + textwrap.dedent(_window_source())
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 9, p.stderr
    t = load(path)
    assert t.status == "recording" and not t.complete
    assert len(t.events) == 3 and len(t.windows) == 1


def _window_source() -> str:
    import inspect

    return inspect.getsource(window)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such trace file"):
        load(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(TraceFileError, match="not a readable HDF5 file"):
        load(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(TraceFileError, match="not a phprof trace"):
        load(tmp_path / "other.h5")
    with h5py.File(tmp_path / "future.h5", "w") as f:
        f.attrs["format"] = "phprof-trace"
        f.attrs["schema_version"] = 99
    with pytest.raises(TraceFileError, match="upgrade phprof"):
        load(tmp_path / "future.h5")


def test_writer_refuses_to_clobber_or_write_nowhere(tmp_path):
    (tmp_path / "exists.h5").write_text("")
    with pytest.raises(FileExistsError, match="exists"):
        TraceWriter(tmp_path / "exists.h5", {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TraceWriter(tmp_path / "no" / "dir" / "t.h5", {})
    with pytest.raises(PermissionError, match="cannot write"):
        TraceWriter(tmp_path, {}, overwrite=True)  # a folder, not a file


# ---- the results: what write_results stores is what load reads back ------------------------------


def _energies() -> list[Energy]:
    """Energies of several methods: with and without a range and a detail, bound or not."""
    return [
        Energy(12.5, 12.25, 12.75, Method.COUNTER, bound=True),
        Energy(3.0, 2.5, 3.75, Method.WLS),  # a confidence interval
        Energy(1.0 / 3.0, None, None, Method.INTEGRATED, "gpu0.power_instant"),
        Energy(0.125, 0.0, 0.5, Method.WITHIN_GROUP, "transformer.h.0.attn (+2 merged)", bound=True),
        Energy(7.0, method=Method.TIME_PROPORTIONAL),
        Energy(2.0, 1.5, 2.5, Method.MIXED, "windowed least squares; energy counter"),
        Energy(None, method=Method.NONE),
    ]


def synthetic_results() -> Results:
    """Results with every field set, every role, method and kind of row (no model, no GPU)."""
    e = _energies()
    layers = [
        Layer("transformer.h.0.attn", Role.MODULE, 0.25, e[1], 12.0, "transformer.h.0.attn (+2 merged)",
              parent="transformer.h.0", calls=60, component="attention", part="scores", stack="decoder",
              module_type="GPT2Attention", parameters=2_359_296, inclusive_low_j=2.5, inclusive_high_j=4.0),
        Layer("transformer.h.0.mlp", Role.MODULE, 0.5, e[3], None, "transformer.h.0.attn (+2 merged)",
              parent="transformer.h.0", calls=60, component="mlp", stack="decoder", unclassified=True,
              module_type="GPT2MLP", parameters=4_722_432),  # no power of its own, no inclusive interval
        Layer("lm_head", Role.MODULE, 0.125, e[5], 16.0, "lm_head", calls=60, component="head",
              module_type="Linear", parameters=0, inclusive_low_j=1.5, inclusive_high_j=2.5),
        Layer(Role.OUTSIDE_MODULES.label, Role.OUTSIDE_MODULES, 0.0625, e[4], 112.0, Role.OUTSIDE_MODULES.label),
        Layer(Role.NO_KERNEL.label, Role.NO_KERNEL, 0.03125, e[2], 10.5, Role.NO_KERNEL.label),
        Layer(Role.UNSCOPED.label, Role.UNSCOPED, 0.0078125, e[2].scaled(0.25), 21.0, Role.UNSCOPED.label,
              device="gpu1"),
        Layer("lm_head.never_powered", Role.MODULE, 0.015625, None, None, "lm_head.never_powered",
              parent="lm_head", calls=1, module_type="Identity"),  # an energy of None
        Layer(Role.BETWEEN_INFERENCES.label, Role.BETWEEN_INFERENCES, 2.0, e[0], 6.25, Role.BETWEEN_INFERENCES.label),
        Layer(Role.WINDOW_WARMUP.label, Role.WINDOW_WARMUP, 0.25, e[3], 150.0, Role.WINDOW_WARMUP.label),
        Layer(Role.WINDOW_SAVE.label, Role.WINDOW_SAVE, 1.5, e[0], 62.5, Role.WINDOW_SAVE.label),
    ]
    leaves = [
        Leaf("transformer.h.0.attn", "ampere_sgemm_128x64_tn", "kernel", 120, 0.125, e[1].scaled(0.5)),
        Leaf("transformer.h.0.attn", "void at::native::softmax<float>(...)", "kernel", 60, 0.0625, e[3]),
        Leaf("lm_head.never_powered", "aten::linear", "op", 1, 0.001, None),
    ]
    return Results(
        model='"gpt2" (tiny)',  # text a reader could take for JSON stays text
        task="text-generation",
        device="gpu0",
        device_name="NVIDIA A100-SXM4-80GB — fake",
        trace_status="complete",
        inferences=3,
        span_s=2.984375,
        inference_s=0.984375,
        batch_size=2,
        timeline="device kernels",
        layers=layers,
        leaves=leaves,
        why_no_energy=None,
        total=Energy(25.5, 24.5, 26.5, Method.COUNTER, bound=True),
        total_uncertainty_j=1.0,
        inferences_energy=Energy(13.0, 12.0, 14.0, Method.COUNTER, bound=True),
        idle_w=55.25,
        method=Method.WLS,
        interval=0.95,
        sensor=SensorModel(0.1, 0.025, 0.002, "fitted to the run"),
        sensor_updates=31,
        residual_w=1.75,
        scale=1.0625,
        groups=[Group("transformer.h.0.attn (+2 merged)", 0.75, 12.5, e[1]), Group("lm_head", 0.125, 16.0, e[5])],
        per_inference=[e[0], Energy(4.0, 3.5, 4.5, Method.COUNTER, bound=True), Energy(4.5, method=Method.COUNTER)],
        phases=[PhaseEnergy("prefill", 3, e[1]), PhaseEnergy("decode", 9, e[5]), PhaseEnergy("forward", 0, e[6])],
        components=[ComponentEnergy("attention", "", 0.25, e[1]), ComponentEnergy("mlp", "", 0.5, e[3])],
        stack_components=[ComponentEnergy("attention", "decoder", 0.25, e[1]),
                          ComponentEnergy("mlp", "decoder", 0.5, Energy(None, method=Method.LAYERS_SUM))],
        kernels=[KernelEnergy("ampere_sgemm_128x64_tn", 120, 0.125, e[1].scaled(0.5)),
                 KernelEnergy("void at::native::softmax<float>(...)", 60, 0.0625, e[3])],
        notes=["the span covers few updates of gpu0.energy", "[not json]", "null"],
        measurement_pass=PassEnergy(20, 0.5, 0.625, Energy(40.0, 39.0, 41.5, Method.COUNTER, bound=True)),
        profiled_pass=PassEnergy(10, 0.3, 0.35, Energy(25.0, 24.5, None, Method.COUNTER, bound=True)),
        devices=[DeviceEnergy("gpu0", "GPU-6f0b3d9a", "NVIDIA A100-SXM4-80GB — fake", "cuda:0",
                              Energy(20.5, 20.0, 21.0, Method.COUNTER, bound=True), 0.5, e[1], Method.WLS,
                              SensorModel(0.1, 0.025, 0.002, "fitted to the run"), 20, 1.5, 1.03125, 50.0, 0.75, 0.125,
                              Energy(6.25, method=Method.AT_LAYER_POWER)),
                 DeviceEnergy("gpu1", "", "NVIDIA A100-SXM4-80GB — fake", "cuda:1",
                              Energy(5.0, method=Method.ESTIMATE_SUM), None, None, Method.TIME_PROPORTIONAL, None, 11, None, 1.0, None, 0.25, 0.5),
                 DeviceEnergy("package-0", "node0/package-0", "CPU package (RAPL)", "",
                              Energy(8.0, 7.5, 8.5, Method.COUNTER, bound=True), 0.5,
                              kept_whole="the host's whole draw: no layer's share of it is measured")],
        run_total=Energy(33.5, 32.5, 34.5, Method.COUNTER, bound=True),
    )


def time_only_results() -> Results:
    """A trace without power readings: times only, every energy None."""
    return Results(
        model="gpt2", task=None, device="", device_name=None, trace_status="interrupted", inferences=2,
        span_s=0.5, inference_s=0.25, batch_size=None, timeline="module scopes (CPU)",
        layers=[Layer("transformer.h.0", Role.MODULE, 0.125, None, None, "transformer.h.0", calls=2),
                Layer(Role.OUTSIDE_MODULES.label, Role.OUTSIDE_MODULES, 0.125, None, None, Role.OUTSIDE_MODULES.label),
                Layer(Role.BETWEEN_INFERENCES.label, Role.BETWEEN_INFERENCES, 0.25, None, None,
                      Role.BETWEEN_INFERENCES.label)],
        leaves=[Leaf("transformer.h.0", "aten::mm", "op", 4, 0.0625, None)],
        why_no_energy="the trace was recorded with --source none",
        per_inference=[None, None],
    )


def trace_file(path):
    w = TraceWriter(path, {"model": "gpt2"})
    window(w, 0, 2)
    w.close("complete")
    return path


@pytest.mark.parametrize("make", [synthetic_results, time_only_results], ids=["energies", "time-only"])
def test_results_round_trip(tmp_path, make):
    path = trace_file(tmp_path / "t.h5")
    original = make()
    assert load(path).results is None  # not attributed yet
    write_results(path, original)
    back = load(path).results
    assert back == original
    # field by field too, so that a failure names the table that differs
    for name in ("layers", "leaves", "groups", "per_inference", "phases", "components", "stack_components",
                 "kernels", "notes", "devices", "run_total"):
        assert getattr(back, name) == getattr(original, name), name
    assert [x.role for x in back.layers] == [x.role for x in original.layers]
    if not original.devices:
        return
    # a host zone measured beside the GPUs comes back kept whole, and is not one of the attributed devices
    assert [d.kept_whole != "" for d in back.devices] == [False, False, True]
    assert [d.device for d in back.attributed_devices] == ["gpu0", "gpu1"] and back.several_devices
    one = replace(back, devices=[back.devices[0], back.devices[2]])
    assert not one.several_devices and [d.device for d in one.kept_whole] == ["package-0"]


def test_every_role_and_method_kind_is_in_the_round_trip():
    """The synthetic results cover what the test above claims to cover."""
    r = synthetic_results()
    assert {x.role for x in r.layers} == set(Role)
    energies = [x.energy for x in r.layers] + [x.energy for x in r.leaves] + r.per_inference
    assert None in energies
    energies = [x for x in energies if x is not None]
    assert len({x.method for x in energies}) >= 5
    assert any(x.has_range and x.bound for x in energies) and any(x.has_range and not x.bound for x in energies)
    assert any(not x.has_range for x in energies) and any(x.detail for x in energies)
    assert all(getattr(r, f.name) not in (None, [], "") for f in fields(Results) if f.name != "why_no_energy")


def test_results_replace_earlier_ones_and_keep_the_rollups(tmp_path):
    path = trace_file(tmp_path / "t.h5")
    write_results(path, time_only_results())
    r = synthetic_results()
    per = r.inferences_energy.scaled(1 / r.inferences)
    carbon = Carbon("world", "World", 480.0, 2023, "Ember", 1.5, 1.25, 1.75)
    write_results(path, r, Rollups(per, per.scaled(1000), 1.2, carbon, tokens=24))
    assert load(path).results == r
    with h5py.File(path) as f:
        rollups = json.loads(f["results"].attrs["rollups"])
    assert rollups["pue"] == 1.2 and rollups["tokens"] == 24 and rollups["carbon"]["region"] == "world"
    assert rollups["per_1000"]["method"] == "COUNTER"
    assert rollups["per_1000"]["joules"] == pytest.approx(per.joules * 1000)


def test_results_of_another_version_read_back_as_none(tmp_path):
    path = trace_file(tmp_path / "t.h5")
    write_results(path, synthetic_results())
    for version in (RESULTS_VERSION - 1, RESULTS_VERSION + 1):
        with h5py.File(path, "r+") as f:
            f["results"].attrs["results_version"] = version
        t = load(path)
        assert t.results is None and t.complete  # recomputed by whoever needs them; the trace still reads
    attrs, tables = to_tables(synthetic_results())
    assert from_tables(attrs, tables) == synthetic_results()
    assert from_tables({**attrs, "results_version": RESULTS_VERSION - 1}, tables) is None
    assert from_tables({k: v for k, v in attrs.items() if k != "results_version"}, tables) is None


def test_results_are_not_written_into_other_files(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(TraceFileError, match="not a phprof trace"):
        write_results(tmp_path / "other.h5", synthetic_results())
    with pytest.raises(PermissionError, match="cannot write the results"):
        write_results(tmp_path / "absent.h5", synthetic_results())
