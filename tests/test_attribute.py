"""Attribution of trace files: timelines, conservation, roll-ups, stored results, reports and
imported traces through the library, and bad input. What the `phprof report` and `phprof attribute`
commands print and exit with: tests/test_commands_report.py."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import phprof
from phprof import carbon, load
from phprof.attribution import attribute
from phprof.attribution.attribute import module_types
from phprof.attribution.components import Taxonomy
from phprof.attribution.estimate import instant_windows
from phprof.attribution.timeline import kernel_timeline, scope_timeline, trace_timeline
from phprof.clock import clock_steps
from phprof.energy import Method
from phprof.errors import OptionError
from phprof.render.palette import kind_of
from phprof.sources.sensors import phase_coverage
from phprof.store import DEVICE_KINDS, TraceFileError
from phprof.store.file import TraceNotFound
from phprof.store.results import Role
from phprof.tracing.importing import ClockMismatchError
from phprof.tracing.kineto import load_kineto
from power_logs import power_csv

KINETO = Path(__file__).resolve().parents[2] / "shared" / "data" / "kineto"
OUTSIDE = Role.OUTSIDE_MODULES.label
NO_KERNEL = Role.NO_KERNEL.label


@pytest.mark.integration
def test_the_timeline_covers_each_inference_once(traced_without_power):
    t = load(traced_without_power("google/flan-t5-base", "zero-shot-summarization")[0])
    tl = scope_timeline(t)
    assert (tl.starts_ns[1:] >= tl.ends_ns[:-1]).all()  # no overlap
    inference_time = (t.inferences["end_ns"] - t.inferences["start_ns"]).sum()
    assert (tl.ends_ns - tl.starts_ns).sum() == inference_time  # every instant of every inference, once
    assert OUTSIDE in tl.names and "encoder" in tl.names and len(tl.names) == len(set(tl.names))
    # a scope's parent is the scope it ran in
    parent = {tl.names[j]: (tl.names[p] if p >= 0 else None) for j, p in enumerate(tl.parents)}
    assert parent["encoder.block.0.layer.0"] == "encoder.block.0" and parent[OUTSIDE] is None


@pytest.mark.integration
def test_attribution_conserves_the_measured_energy_and_says_how(gpt2_trace):
    path, truth = gpt2_trace
    t = load(path)
    r = attribute(t)
    span = (int(t.inferences["start_ns"].min()), int(t.inferences["end_ns"].max()))
    measured = t.power.energy_between("gpu0", *span)
    # layers + idle = the counter's energy, exactly; and that is the fake's truth within its bound
    assert sum(x.energy.joules for x in r.layers) == pytest.approx(measured.joules, rel=1e-9)
    assert r.total.joules == pytest.approx(measured.joules, rel=1e-9)
    assert span == truth["span"]
    assert abs(measured.joules - truth["span_j"]) <= measured.uncertainty_j
    assert r.total.method is Method.COUNTER and r.total_measured
    # per inference figures add up to the inferences' own energy
    assert sum(e.joules for e in r.per_inference) == pytest.approx(r.inferences_energy.joules, rel=1e-9)
    assert r.inferences_energy.joules < r.total.joules  # the pauses between inferences are not theirs
    # phases: prefill and decode, inside the inferences
    assert {p.name for p in r.phases} == {"prefill", "decode"} and r.phase("decode").count == truth["inferences"] * (truth["new_tokens"] - 1)
    assert sum(p.energy.joules for p in r.phases) <= r.inferences_energy.joules
    # idle power measured before the run: the fake's idle (60 W)
    assert r.idle_w == pytest.approx(60.0, rel=0.05)
    # every figure says its method: the run is resolved by windowed least squares, and each label
    # is either resolved on its own (an interval that holds its estimate) or split by time within
    # its merged group (a conservative bound that holds its share)
    assert r.method is Method.WLS
    rows = [x for x in r.layers if not x.role.between_inferences]
    resolved = [x for x in rows if x.energy.method is Method.WLS]
    by_time = [x for x in rows if x.energy.method.by_time]
    assert resolved and len(resolved) + len(by_time) == len(rows)
    # (a label inside too few of the sensor's windows keeps its estimate, with the bounds physics allows,
    # and the note names it)
    few = next((n for n in r.notes if "so the data do not pin them" in n), "")
    for x in resolved:
        e = x.energy
        assert (not e.bound or x.label in few.split(": inside")[0].split(", ")) and e.has_range \
            and e.low_j <= e.joules <= e.high_j, x
    for x in by_time:
        e = x.energy
        assert e.method is Method.WITHIN_GROUP and x.group != x.label, x  # a member of a merged group
        assert e.bound and e.has_range and e.low_j <= e.joules <= e.high_j, x
    # the notes say how well the sensor's windows covered the inferences: this run's windows, recomputed
    # from the logged update instants (the attribution places them on the grid fitted to them, each within
    # its bracket, which moves a window by a few ms: at most one window and one of the 20 bins of the
    # inference differ)
    instants, watts = t.power.instant_power("gpu0")
    windows = instant_windows(instants, watts, r.sensor, span)
    cov = phase_coverage((windows.a_ns + windows.b_ns) // 2, t.inferences["start_ns"], t.inferences["end_ns"])
    said = [re.fullmatch(r"the sensor's (\d+) windows covered (\d+)% of the inference's duration", n) for n in r.notes]
    said = [m for m in said if m]
    assert len(said) == 1, r.notes
    assert abs(int(said[0][1]) - cov.windows) <= 1 and abs(int(said[0][2]) / 100 - cov.covered) <= 1 / cov.bins + 0.005
    assert "windows covered" in cov.describe() and not cov.aliased and cov.covered >= 0.9
    assert 20 <= cov.windows <= r.sensor_updates == len(windows.watts)
    assert not any(n.startswith("aliasing:") for n in r.notes)


@pytest.mark.integration
def test_per_layer_estimates_track_the_truth(gpt2_trace):
    """11 s of run is short (the benchmark runs >= 60 s): a loose bound here."""
    path, truth = gpt2_trace
    r = attribute(load(path))
    total = r.inferences_energy.joules
    checked = 0
    for g in r.groups:
        members = [x for x in r.layers if x.group == g.label]
        assert members, g.label
        if any(x.role is Role.OUTSIDE_MODULES for x in members):
            continue
        true_j = sum(truth["modules"][x.label] for x in members)
        assert abs(g.energy.joules - true_j) / total < 0.05, (g.label, g.energy.joules, true_j)
        checked += 1
    # not vacuous: the run resolved its layers into many groups (a time split would be one group)
    assert r.method is Method.WLS and checked >= 10, (r.method, checked, r.notes)


def _without_results(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        if "results" in f:
            del f["results"]


@pytest.mark.integration
def test_report_stores_results_and_reads_them_back(gpt2_trace, tmp_path, monkeypatch):
    path = tmp_path / "copy.h5"
    shutil.copy(gpt2_trace[0], path)
    _without_results(path)  # whatever another test stored in the session's trace
    first = phprof.report(path, region="fr", pue=1.2, training_kwh=100)
    text = phprof.render(first, "text")
    assert "per 1,000 inferences" in text and "gCO2eq" in text and "France" in text
    assert "windowed least squares" in text and "training parity" in text
    stored = load(path).results
    assert stored is not None and stored.method is Method.WLS
    assert stored.layers and all(x.energy is not None for x in stored.layers)
    # the second report reads the stored results: same figures, nothing attributed again
    def no_attribution(*args, **kwargs):
        raise AssertionError("the stored results were not read back")

    monkeypatch.setattr("phprof.attribution.attribute", no_attribution)
    again = phprof.report(path, region="fr", pue=1.2)
    data = json.loads(phprof.render(again, "json"))
    assert data["summary"]["inferences_energy"]["joules"] == pytest.approx(stored.inferences_energy.joules)
    roll = data["rollups"]
    assert roll["per_1000"]["kwh"] == pytest.approx(roll["per_1000"]["joules"] / 3.6e6)
    assert roll["carbon"]["per_1000_g"] == pytest.approx(roll["per_1000"]["kwh"] * 1.2 * roll["carbon"]["g_co2eq_per_kwh"])
    assert roll["per_token"]["joules"] == pytest.approx(data["summary"]["inferences_energy"]["joules"] / (gpt2_trace[1]["inferences"] * gpt2_trace[1]["new_tokens"]))
    md = phprof.render(phprof.report(path), "markdown", top=3)
    assert md.count("\n| `") == 3


@pytest.mark.integration
def test_report_bad_options_and_files(tmp_path, gpt2_trace):
    with pytest.raises(OptionError, match="atlantis"):
        phprof.report(gpt2_trace[0], region="atlantis")
    with pytest.raises(OptionError, match="not both"):
        phprof.report(gpt2_trace[0], region="fr", carbon_intensity=100)
    with pytest.raises(TraceNotFound, match="no such trace file"):
        phprof.report(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(TraceFileError, match="not a readable HDF5 file"):
        phprof.report(junk)
    assert "aws:us-east-1" in carbon.load_table()  # what --list-regions lists


@pytest.mark.integration
def test_a_trace_without_power_says_so(silent_trace):
    out = silent_trace  # the test's own copy: phprof.report stores its results in the file
    r = attribute(load(out))
    assert not r.has_energy and "no power readings" in r.why_no_energy
    assert r.total is None and all(x.energy is None for x in r.layers)
    text = phprof.render(phprof.report(out), "text", top=100)  # time per layer only, and why
    assert "energy: not measured" in text and "lm_head" in text


@pytest.mark.integration
def test_an_interrupted_trace_is_attributed_and_labelled(gpt2_trace, tmp_path):
    path = tmp_path / "cut.h5"
    shutil.copy(gpt2_trace[0], path)
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "interrupted"
        f.attrs["complete"] = False
    r = attribute(load(path))
    assert any("interrupted" in n for n in r.notes)


@pytest.mark.integration
def test_mismatched_clocks_are_refused_and_steps_reported(gpt2_trace, tmp_path):
    path = tmp_path / "shifted.h5"
    shutil.copy(gpt2_trace[0], path)
    with h5py.File(path, "r+") as f:
        r = f["power/readings"][:]
        r["t_before_ns"] += 3600 * 10**9  # an hour off: another clock
        r["t_after_ns"] += 3600 * 10**9
        f["power/readings"][:] = r
    results = attribute(load(path))  # no energy from readings on another clock: times only, and why
    assert not results.has_energy and "do not overlap" in results.why_no_energy
    pairs = np.array([[0, 1_000_000_000], [10**9, 2_000_000_000], [2 * 10**9, 3_050_000_000]])
    assert clock_steps(pairs) == [(2_000_000_000, 3_050_000_000, 50_000_000)]


@pytest.mark.integration
def test_a_damaged_file_is_refused(gpt2_trace, tmp_path):
    path = tmp_path / "damaged.h5"
    data = Path(gpt2_trace[0]).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(TraceFileError, match=re.escape(str(path))):  # an error for the user, not a crash
        phprof.report(path)


@pytest.mark.integration
def test_kernel_timeline_of_a_real_gpu_trace(tmp_path):
    """The V100 ResNet trace: kernels become the timeline, labelled by their scopes."""
    kt = load_kineto(KINETO / "v100-resnet-ns.json.gz")
    ev = kt.events
    t0, t1 = int(ev["start_ns"].min()), int(ev["end_ns"].max())
    out = phprof.import_trace(KINETO / "v100-resnet-ns.json.gz", power_csv(tmp_path / "p.csv", t0, t1),
                              tmp_path / "v.h5")
    t = load(out)
    tl = kernel_timeline(t)
    assert tl is not None and trace_timeline(t)[1] == "device kernels"
    assert (tl.starts_ns[1:] >= tl.ends_ns[:-1]).all()  # overlaps cut
    # kernels (which may run on after their launching inference's CPU span ends),
    # and the gaps between them inside the inferences, labelled apart
    kernel_rows = tl.events >= 0
    gaps = ~kernel_rows
    assert (tl.labels[gaps] == tl.names.index(NO_KERNEL)).all()
    inf = np.sort(t.inferences, order="start_ns")
    i = np.searchsorted(inf["start_ns"], tl.starts_ns[gaps], side="right") - 1
    assert (i >= 0).all() and (tl.ends_ns[gaps] <= inf["end_ns"][i]).all()
    assert (np.isin(t.events["kind"][tl.events[kernel_rows]], [int(k) for k in DEVICE_KINDS])).all()
    assert NO_KERNEL in tl.names


@pytest.mark.integration
def test_a_foreign_trace_is_imported_and_reported(tmp_path):
    """What `phprof attribute` does, from the library: the V100 trace and a power log whose
    power follows the kernels: the kernels get energy, the total is the log's."""
    kt = load_kineto(KINETO / "v100-resnet-ns.json.gz")
    ev = kt.events
    busy = ev[np.isin(ev["kind"], [int(k) for k in DEVICE_KINDS])]
    t0, t1 = int(ev["start_ns"].min()), int(ev["end_ns"].max())
    csv_path = power_csv(tmp_path / "p.csv", t0, t1)
    trace_path = tmp_path / "trace.json.gz"
    shutil.copy(KINETO / "v100-resnet-ns.json.gz", trace_path)
    out = phprof.import_trace(trace_path, csv_path, tmp_path / "trace.h5")
    assert out == tmp_path / "trace.h5" and out.exists()
    r = phprof.report(out, recompute=True).results
    assert r.timeline == "device kernels" and r.inferences == 5
    assert len(r.kernels) > 10
    # 200 W flat: energy over the inferences' span is 200 W x the span
    assert r.total.joules == pytest.approx(200.0 * r.span_s, rel=0.01)
    assert len(busy)  # the trace has device work
    # a second report reads the stored results back, figures the import could not know (idle power) included
    assert load(out).results is not None
    again = phprof.report(out)
    assert again.results.idle_w is None
    text = phprof.render(again, "text")
    assert "per 1,000 inferences" in text and "static / active" not in text
    # a power log on another clock is refused with both ranges named
    bad = power_csv(tmp_path / "bad.csv", t0 + 86400 * 10**9, t1 + 86400 * 10**9)
    with pytest.raises(ClockMismatchError, match="UTC"):
        phprof.import_trace(trace_path, bad, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


@pytest.fixture(scope="module")
def traced(traced_without_power, t5_small_trace):
    """A model's session trace (time only; t5-small's, a relu T5 from its config.json, with the
    fake GPU's power), and its results: each model attributed once."""
    done = {}

    def get(model):
        if model not in done:
            path = t5_small_trace if model == "t5-small" else traced_without_power(model)[0]
            t = load(path)
            done[model] = t, attribute(t)
        return done[model]

    return get


@pytest.mark.integration
@pytest.mark.parametrize("model, path, kind", [
    ("gpt2", "transformer.h.0.attn.c_proj", "attention"), ("gpt2", "transformer.h.0.mlp.c_fc", "mlp"),
    ("gpt2", "transformer.wte", "embedding"), ("gpt2", "lm_head", "head"), ("gpt2", "transformer.h.0.ln_1", "norm"),
    ("gpt2", "transformer.drop", "other"), ("t5-small", "encoder.block.0.layer.1.DenseReluDense.wi", "mlp"),
    ("t5-small", "decoder.block.0.layer.1.EncDecAttention.k", "attention"),
    ("bigscience/bloomz-560m", "transformer.word_embeddings_layernorm", "norm"),
    ("microsoft/resnet-18", "resnet.encoder.stages.0.layers.0.layer.0.convolution", "convolution"),
    ("gpt2", Role.OUTSIDE_MODULES, "other"),
])
def test_component_kinds(model, path, kind, traced):
    """Each module's component, from the taxonomy with the trace's module types, is of the colour kind
    its frames are drawn in; the time outside every module is "other"."""
    t, results = traced(model)
    if isinstance(path, Role):
        layer = next(x for x in results.layers if x.role is path)
    else:
        types = module_types(t)
        assert path in types  # a module of the traced model
        layer = next(x for x in results.layers if x.label == path)
        assert layer.role is Role.MODULE and layer.module_type == types[path]
        assert Taxonomy.load().classify(path, types).component == layer.component
    assert kind_of(layer.component) == kind


@pytest.mark.integration
def test_components_add_up_to_the_layers(gpt2_trace):
    r = attribute(load(gpt2_trace[0]))
    assert sum(c.energy.joules for c in r.components) == pytest.approx(
        sum(x.energy.joules for x in r.layers if not x.role.between_inferences), rel=1e-9)
    assert {"self-attention", "mlp", "norm", "embeddings", "head"} <= {c.component for c in r.components}


@pytest.mark.integration
def test_the_studys_bloomz_training_energy_gives_the_parity_by_default(bloomz_trace, copy_of):
    out = copy_of(bloomz_trace)  # the report stores its results in the file
    report = phprof.report(out)
    assert report.rollups.training_kwh == 10_505.0 + 543.0  # paper.md: training + fine-tuning of BLOOMz-560m
    assert report.rollups.parity_inferences is not None
    parity = json.loads(phprof.render(report, "json"))["rollups"]["parity"]
    assert parity["training_kwh"] == 10_505.0 + 543.0
