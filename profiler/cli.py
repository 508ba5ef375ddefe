"""The `phprof` command: a thin layer of options over the library."""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import click

from . import __version__
from .render import formats
from .sources import BehaviourTally, NvmlSource, RaplSource, probe_all


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phprof")
def main() -> None:
    """phprof: where the joules of ML inference go.

    `phprof trace` runs a model's inferences while a native thread samples the
    GPU's (or CPU's) power and energy counters, each reading stamped with the
    time of its driver call on the clock torch.profiler uses. `phprof report`
    then estimates each layer's and kernel's energy from them; `flamegraph` and
    `compare` show where the joules went.
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--measure",
    type=click.FloatRange(min=0, min_open=True, max=600),
    metavar="SECONDS",
    help="Also sample every available sensor as fast as it answers for SECONDS and report, per "
    "channel, the measured cost of one read and how often its value changes.",
)
def devices(as_json: bool, measure: float | None) -> None:
    """List the power sources on this machine, what each measures, and why a missing one is missing.

    \b
    Sources:
      nvml  NVIDIA GPUs: energy counter, instant power, 1 s average (libnvidia-ml,
            or the file named by PHPROF_NVML_LIB)
      rapl  CPU package and DRAM energy counters (Linux powercap; root may be needed)
      none  wall-clock time only; energy is never measured with it

    Update periods shown without --measure are the published ones for the GPU
    family, not measurements of this GPU.
    """
    found = probe_all()
    observed = _measure(found, measure) if measure else {}
    if as_json:
        out = [dataclasses.asdict(a) for a in found]
        for entry in out:
            if entry["source"] in observed:
                rows, dropped = observed[entry["source"]]
                entry["observed"] = [dataclasses.asdict(o) for o in rows]
                entry["observed_seconds"] = measure
                entry["observed_dropped"] = dropped
        click.echo(json.dumps(out, indent=2))
        return
    for a in found:
        state = "available" if a.available else "not available"
        click.echo(f"{a.source:<5} {state}" + (f": {a.reason}" if a.available else ""))
        click.echo(f"      measures: {a.measures}")
        if not a.available:
            click.echo(f"      why: {a.reason}")
        for d in a.devices:
            _echo_device(a.source, d)
        if a.source in observed:
            _echo_observed(observed[a.source], measure)
        click.echo()


def _echo_device(source: str, d: dict) -> None:
    if source == "nvml":
        click.echo(f"      GPU {d['index']}: {d['name']}  {d['uuid']}")
        for field, f in d["fields"].items():
            if f["ok"]:
                value = f"{f['value']} {f['unit']}"
                click.echo(f"        {field:<14} ok   {value:>16}  read in {f['call_us']:.0f} us")
                click.echo(f"        {'':<14}      nominal: {f['behaviour']}")
            else:
                click.echo(f"        {field:<14} {f['error'] or 'error'} (NVML code {f['status']})")
    elif source == "rapl":
        default = "" if d["default"] else " (not sampled by default: part of another zone)"
        click.echo(f"      {d['name']:<12} {d['zone']}, wraps at {d['wraps_at_uj']} uJ{default}")


def _measure(found, seconds: float) -> dict:
    """Sample each available sensor as fast as it answers for `seconds`, draining as it goes."""
    sources = {}
    for a in found:
        if not a.available:
            continue
        if a.source == "nvml":
            sources["nvml"] = NvmlSource(gpus=[d["index"] for d in a.devices], interval_s=None)
        elif a.source == "rapl":
            sources["rapl"] = RaplSource(interval_s=None)
    observed = {}
    for name, src in sources.items():
        tally = BehaviourTally(src.channels)
        with click.progressbar(length=100, label=f"sampling {name} for {seconds:g} s", file=sys.stderr) as bar:
            src.start()
            start = time.monotonic()
            end = start + seconds
            while (now := time.monotonic()) < end:
                time.sleep(min(0.05, end - now))
                tally.add(src.drain())
                bar.update(min(100, round(100 * (time.monotonic() - start) / seconds)) - bar.pos)
            tally.add(src.stop())
        observed[name] = (tally.result(), tally.dropped)
    return observed


def _echo_observed(observed, seconds: float) -> None:
    rows, dropped = observed
    click.echo(f"      measured here over {seconds:g} s, polling as fast as the sensor answers:")
    if dropped:
        click.echo(f"      ({dropped} readings dropped: the buffer filled between drains; figures cover the rest)")
    click.echo(f"        {'channel':<22} {'reads/s':>9} {'read p50':>9} {'read p99':>9} {'changes':>8}  change interval")
    for o in rows:
        if o.change_interval_ms_median is None:
            interval = "no change seen" if o.changes == 0 else "one change seen"
        else:
            interval = (
                f"median {o.change_interval_ms_median:.1f} ms "
                f"(p10 {o.change_interval_ms_p10:.1f}, p90 {o.change_interval_ms_p90:.1f})"
            )
        errors = f", {o.errors} errors" if o.errors else ""
        click.echo(
            f"        {o.channel:<22} {o.reads_per_s:>9.0f} {o.call_us_p50:>7.1f}us {o.call_us_p99:>7.1f}us "
            f"{o.changes:>8}  {interval}{errors}"
        )


@main.command(name="trace")
@click.argument("model_id")
@click.option("--task", help="One of the study's tasks (see `phprof models`); default: the model's own task.")
@click.option("-n", "--inferences", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inferences to trace (the study's unit is 1,000).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Inferences run first and not recorded.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Trace file to write "
              "(default: traces/MODEL.TASK.TIME.h5).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), help="Input tokens (default: the task's datasets).")
@click.option("--new-tokens", type=click.IntRange(min=1), help="Generated tokens per inference (generation tasks).")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (image generation).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--weights", type=click.Choice(["random", "pretrained"]), default="random", show_default=True,
              help="random: built offline from the architecture's config (energy depends on shapes, not "
              "values); pretrained: from the local Hugging Face cache or a model directory.")
@click.option("--source", type=click.Choice(["auto", "nvml", "rapl", "none"]), default="auto", show_default=True,
              help="Power source (auto: NVML for a GPU, RAPL for the CPU when readable, else time only).")
@click.option("--size", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="tiny: the architecture shrunk to 2 narrow layers, for quick checks (its energy is not "
              "the real model's).")
@click.option("--anti-alias/--no-anti-alias", default=True, show_default=True,
              help="With a GPU sensor, pause a random time (up to one inference) once per sensor period so "
              "that its short averaging windows fall on every part of the inferences.")
@click.option("--idle", "idle_s", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds of idle power sampled before the run.")
def trace_command(model_id, task, inferences, warmup, output, overwrite, batch_size, seq_len, new_tokens, steps,
                  dtype, device, weights, size, source, anti_alias, idle_s) -> None:
    """Run MODEL_ID's inferences under the power sampler and torch.profiler, into one HDF5 file.

    MODEL_ID is a model of the study (see `phprof models`), a path to a config.json, or a
    model directory. Every module's forward, every inference and every generation or
    denoising step is recorded as a scope; power readings are stored with their times.
    Ctrl-C stops the run and leaves a valid file of the inferences done, with the
    status "interrupted".
    """
    from .tracing.run import TraceError, trace

    with click.progressbar(length=inferences, label=f"tracing {model_id}", file=sys.stderr,
                           show_eta=True, show_pos=True) as bar:
        def progress(done, total):
            bar.update(done - bar.pos)

        try:
            summary = trace(
                model_id, task, inferences=inferences, warmup=warmup, output=output, batch_size=batch_size,
                seq_len=seq_len, new_tokens=new_tokens, steps=steps, dtype=dtype, device=device, weights=weights,
                size=size, source=source, anti_alias=anti_alias, idle_s=idle_s, progress=progress,
                overwrite=overwrite,
            )
        except TraceError as e:
            raise click.ClickException(str(e)) from None
    _echo_summary(summary)
    if summary.status != "complete":
        sys.exit(130)


def _echo_summary(s) -> None:
    click.echo(f"{s.status}: {s.inferences} inferences of {s.model} ({s.task}), {s.inference_s:.2f} s of their "
               f"own time ({1e3 * s.seconds_per_inference:.2f} ms per inference, profiler overhead included)")
    e = s.energy
    if e is None or e.joules is None:
        click.echo("energy: not measured (the run had no power source; `phprof devices` lists this machine's)")
    else:
        j = s.joules_per_inference
        pm = "" if e.uncertainty_j is None else f" +- {e.uncertainty_j:.2g}"
        gaps = s.span_s - s.inference_s
        click.echo(f"energy: {e.joules:.4g}{pm} J over the profiler windows' {s.span_s:.2f} s ({e.kind}: {e.method}, "
                   f"{e.device}), {gaps:.2f} s between inferences included")
        click.echo(f"  that is {j:.4g} J per inference, {j * 1000:.4g} J = {j * 1000 / 3.6e6:.3g} kWh per 1,000, "
                   "gaps included; `phprof report` gives the inferences' own")
    for note in dict.fromkeys(list(s.notes) + (list(e.notes) if e else [])):
        click.echo(f"  note: {note}")
    click.echo(f"written: {s.path}")
    if e is not None and e.joules is not None:
        click.echo(f"per layer: phprof report {s.path}")


def _report_options(f):
    """Options shared by `report` and `attribute`: output form, carbon, parity, sensor."""
    options = [
        click.option("--json", "form", flag_value="json", help="Print the results as JSON (all tables)."),
        click.option("--markdown", "form", flag_value="markdown", help="Print markdown tables."),
        click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
                     help="Layers (and kernels) listed."),
        click.option("--region", help="Grid whose carbon intensity converts energy to gCO2eq: a country code "
                     "(fr, us...), world, or a cloud region (aws:us-east-1, gcp:europe-west4...); see "
                     "--list-regions. Default: world."),
        click.option("--carbon-intensity", type=click.FloatRange(min=0, max=2000), metavar="G_PER_KWH",
                     help="Your own grid intensity in gCO2eq/kWh, instead of --region."),
        click.option("--pue", type=click.FloatRange(min=1.0), default=1.0, show_default=True,
                     help="The facility's power usage effectiveness: energy at the wall over energy of the IT."),
        click.option("--training-kwh", type=click.FloatRange(min=0, min_open=True), metavar="KWH",
                     help="Training energy of the model: prints how many inferences use as much (the study's parity). "
                     "Default for the study's BLOOMz models: its published training + fine-tuning kWh."),
        click.option("--sensor", "calibration", type=click.Path(dir_okay=False),
                     help="Sensor calibration JSON (period_s, window_s, lag_s) instead of the published model; "
                     "its lag and window are then used as given."),
        click.option("--list-regions", is_flag=True, help="List the bundled grid intensities and exit."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _intensity(region, g_per_kwh):
    from . import carbon

    if region and g_per_kwh is not None:
        raise click.UsageError("give --region or --carbon-intensity, not both")
    try:
        return carbon.custom(g_per_kwh) if g_per_kwh is not None else carbon.lookup(region or carbon.DEFAULT_REGION)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _list_regions() -> None:
    from . import carbon

    for key, c in carbon.load_table().items():
        click.echo(f"{key:<24} {c.g_co2eq_per_kwh:>7.0f} g/kWh  {c.name} ({c.year}; {c.source})")


def _load(path):
    from .store import TraceFileError, load

    try:
        return load(path)
    except (FileNotFoundError, TraceFileError) as e:
        raise click.ClickException(str(e)) from None


def _results(path, calibration=None, recompute=False, store=True, trace=None):
    """A trace (``trace``, else read from ``path``) and its attribution's (summary,
    tables), and whether they were just computed: read from the file's /results,
    or computed and (with ``store``) stored there. Raises NoPowerError for a trace
    whose energy cannot be attributed (only its time can be shown)."""
    from .attribution import AttributionError, attribute, load_sensor_model
    from .attribution.attribute import NoPowerError
    from .attribution.results import RESULTS_VERSION, to_results

    t = _load(path) if trace is None else trace
    stored = t.results is not None and t.results["summary"].get("results_version") == RESULTS_VERSION
    if stored and not recompute and calibration is None:
        summary, tables = t.results["summary"], t.results["tables"]
        summary.pop("rollups", None)
        return t, summary, tables, False
    try:
        sensor = load_sensor_model(calibration) if calibration else None
        att = attribute(t, sensor=sensor, fit=calibration is None)
    except NoPowerError:
        raise
    except AttributionError as e:
        raise click.ClickException(str(e)) from None
    summary, tables = to_results(att, t.meta)
    if store:
        _store(path, summary, tables)
    return t, summary, tables, True


def _store(path, summary: dict, tables: dict) -> None:
    from .store import TraceFileError, write_results

    try:
        write_results(path, summary, tables)
    except (PermissionError, TraceFileError) as e:
        click.echo(f"note: results not stored ({e})", err=True)


def _report(path, form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute=False,
            html=None) -> None:
    """Loads (or computes and stores) a trace's attribution and prints the report."""
    from .attribution.attribute import NoPowerError
    from .attribution.results import rollups
    from .report import render_json, render_markdown, render_text

    intensity = _intensity(region, carbon_intensity)
    t = _load(path)
    try:
        t, summary, tables, fresh = _results(path, calibration, recompute, store=False, trace=t)
    except NoPowerError as e:
        _time_only(t, str(e), top, form)
        return
    if training_kwh is None:  # the study's published training + fine-tuning energy, for its BLOOMz models
        from . import carbon

        model = summary.get("model")
        if model in carbon.STUDY_TRAINING_KWH:
            training_kwh = carbon.STUDY_TRAINING_KWH[model] + carbon.STUDY_FINETUNING_KWH.get(model, 0.0)
    roll = rollups(summary, intensity, pue, training_kwh)
    if fresh:  # stored once, with the roll-ups of this report
        _store(path, {**summary, "rollups": roll}, tables)
    if html is not None:
        from pathlib import Path

        from .attribution.attribute import power_excerpt
        from .render.frames import frame_tree
        from .render.page import report_page

        out = Path(html)
        if not out.parent.is_dir():
            raise click.ClickException(f"cannot write {out}: the folder {out.parent} does not exist")
        page = report_page(summary, tables, roll, frame_tree(summary, tables), power_excerpt(t, summary, tables))
        out.write_text(page, encoding="utf-8")
        click.echo(f"written: {out} ({out.stat().st_size / 1e6:.1f} MB)", err=True)
    if form == "json":
        click.echo(render_json(summary, tables, roll), nl=False)
    elif form == "markdown":
        click.echo(render_markdown(summary, tables, roll, top), nl=False)
    else:
        click.echo(render_text(summary, tables, roll, top), nl=False)


def _time_only(t, why: str, top: int, form) -> None:
    """The report of a trace without power readings: time per layer only."""
    from .attribution.attribute import layer_times

    what, rows = layer_times(t)
    n = len(t.inferences)
    if form == "json":
        click.echo(json.dumps({"energy": None, "why": why, "inferences": n, "timeline": what,
                               "layers": [{"label": k, "seconds": v} for k, v in rows]}, indent=1))
        return
    total = sum(v for _, v in rows) or 1.0
    click.echo(f"energy: not measured ({why})")
    click.echo(f"time per layer over {n} inferences ({what}), measured by the profiler:")
    for label, sec in rows[:top]:
        click.echo(f"  {1e3 * sec / max(n, 1):10.3f} ms / inference  {sec / total:6.1%}  {label}")


@main.command()
@click.argument("trace_file", type=click.Path(dir_okay=False))
@_report_options
@click.option("--recompute", is_flag=True, help="Attribute again even if the file holds results.")
@click.option("--html", "html", type=click.Path(dir_okay=False),
              help="Also write the report as one self-contained HTML page: the summary, the energy "
              "flamegraph, power over time with the sensor's windows, and energy against time per layer.")
def report(trace_file, form, top, region, carbon_intensity, pue, training_kwh, calibration, list_regions,
           recompute, html) -> None:
    """Where a trace's energy went: totals, per inference and per 1,000, carbon, top layers.

    The first report of a trace attributes its measured energy to layers (windowed least
    squares over the power sensor's updates, with bootstrap intervals) and stores the
    results in the file (group /results); later reports read them back. Every figure
    says whether it was measured or estimated, and how.
    """
    if list_regions:
        _list_regions()
        return
    _report(trace_file, form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute, html)


_FLAMEGRAPH_FORMATS = ("html", *formats.FORMATS)


@main.command()
@click.argument("trace_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="File to write; its name chooses the format: .html (interactive flamegraph), .folded "
              "(folded stacks, integer microjoules), .speedscope.json, .perfetto.json or .trace.json (kernel "
              "timeline with the power samples as a counter track).")
@click.option("--format", "fmt", type=click.Choice(_FLAMEGRAPH_FORMATS), help="The format, whatever the file name.")
@click.option("--min-share", type=click.FloatRange(min=0, max=0.5), default=0.001, show_default=True,
              help="HTML: frames below this share of the total are collapsed into one per parent.")
@click.option("--sensor", "calibration", type=click.Path(dir_okay=False),
              help="Sensor calibration JSON (period_s, window_s, lag_s), as for `phprof report`.")
@click.option("--recompute", is_flag=True, help="Attribute again even if the file holds results.")
def flamegraph(trace_file, output, fmt, min_share, calibration, recompute) -> None:
    """Per-layer energy as a flamegraph: widths are joules, frames the module path down to the kernel or op.

    The HTML file is self-contained (no network): click a frame to zoom, search to
    highlight, hover for joules per inference with the interval, calls and time; switch
    widths between energy and time; flip to an icicle. Energies are estimates (see
    `phprof report`); the attribution is computed and stored in the trace file if needed.
    """
    from pathlib import Path

    from .attribution.attribute import NoPowerError
    from .render.frames import frame_tree

    out = Path(output)
    if fmt is None and out.name.lower().endswith(".html"):
        fmt = "html"
    elif fmt is None:
        try:
            fmt = formats.format_of(out)
        except ValueError as e:
            raise click.UsageError(f"{e}, html (.html); or give --format") from None
    if not out.parent.is_dir():
        raise click.ClickException(f"cannot write {out}: the folder {out.parent} does not exist")
    try:
        t, summary, tables, _ = _results(trace_file, calibration, recompute)
    except NoPowerError as e:
        raise click.ClickException(f"{e}; a flamegraph needs energy (`phprof report` shows the time per layer)") \
            from None
    tree = frame_tree(summary, tables)
    if fmt == "html":
        from .render.html import flamegraph_html

        out.write_text(flamegraph_html(tree, min_share=min_share), encoding="utf-8")
    else:
        formats.write(tree, t, out, fmt)
    click.echo(f"written: {out} ({out.stat().st_size / 1e6:.1f} MB)")


@main.command(name="compare")
@click.argument("trace_files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--json", "form", flag_value="json", help="Print the comparison as JSON.")
@click.option("--markdown", "form", flag_value="markdown", help="Print markdown tables (for an issue).")
@click.option("--html", "html", type=click.Path(dir_okay=False),
              help="Also write one self-contained HTML page: the tables and the differential flamegraph of the "
              "first two runs (red where the second spends more, blue where less).")
@click.option("--min-share", type=click.FloatRange(min=0, max=0.5), default=0.001, show_default=True,
              help="HTML: flamegraph frames below this share are collapsed into one per parent.")
@click.option("--recompute", is_flag=True, help="Attribute again even if a file holds results.")
def compare_command(trace_files, form, html, min_share, recompute) -> None:
    """Compare traces: energy per inference by component, token, parameter and phase.

    \b
    phprof compare A.h5 B.h5 [C.h5 ...]

    Each run's attributed energy (computed and stored in its file if needed, as by
    `phprof report`) is split by stack and component (embeddings, self-attention,
    cross-attention, MLP, norm, head...) per inference, per generated token and per
    parameter, with phases side by side; Δ columns are each run minus the first.
    Warnings (on stderr) name what differs besides the model: task, input shapes,
    device, sensor, method.
    """
    from pathlib import Path

    from .attribution.attribute import NoPowerError
    from .compare import Run, compare, render_html, render_json, render_markdown, render_text

    if len(trace_files) < 2:
        raise click.UsageError(f"compare needs at least two trace files, got {len(trace_files)}")
    out = Path(html) if html else None
    if out is not None and not out.parent.is_dir():
        raise click.ClickException(f"cannot write {out}: the folder {out.parent} does not exist")
    loaded = []
    for path in trace_files:
        try:
            t, summary, tables, _ = _results(path, recompute=recompute)
        except NoPowerError as e:
            raise click.ClickException(f"{path}: no energy to compare ({e}); `phprof report {path}` shows its "
                                       "time per layer") from None
        except click.ClickException as e:
            if str(path) not in e.message:
                e.message = f"{path}: {e.message}"
            raise
        loaded.append((path, t, summary, tables))
    runs = [Run.from_trace(t, summary, tables, name) for (_, t, summary, tables), name in
            zip(loaded, _run_names([(p, s.get("model") or t.meta.get("model")) for p, t, s, _ in loaded]))]
    comparison = compare(runs)
    for w in comparison.warnings:
        click.echo(f"warning: {w}", err=True)
    if out is not None:
        from .render.frames import frame_tree

        trees = [frame_tree(s, tab) for _, _, s, tab in loaded[:2]]
        out.write_text(render_html(comparison, *trees, min_share=min_share), encoding="utf-8")
        click.echo(f"written: {out} ({out.stat().st_size / 1e6:.1f} MB)", err=True)
    if form == "json":
        click.echo(render_json(comparison), nl=False)
    elif form == "markdown":
        click.echo(render_markdown(comparison), nl=False)
    else:
        click.echo(render_text(comparison, warnings=False), nl=False)


def _run_names(runs: list[tuple[str, str | None]]) -> list[str]:
    """A name per run: its model, with the file's name where two runs share a model."""
    from pathlib import Path

    models = [m or Path(p).stem for p, m in runs]
    names = [m if models.count(m) == 1 else f"{m} ({Path(p).name})" for (p, _), m in zip(runs, models)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


@main.command(name="attribute")
@click.argument("kineto_json", type=click.Path(dir_okay=False))
@click.argument("power_csv", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Trace file to write (default: KINETO_JSON's name with .h5).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--device", default="gpu0", show_default=True, help="Name of the device the power log measured.")
@_report_options
def attribute_command(kineto_json, power_csv, output, overwrite, device, form, top, region, carbon_intensity, pue,
                      training_kwh, calibration, list_regions) -> None:
    """Attribute a trace recorded elsewhere: a torch.profiler JSON plus a power log CSV.

    \b
    KINETO_JSON  a Chrome-trace JSON from torch.profiler (.json or .json.gz);
                 ProfilerStep#N spans become the inferences (else the whole trace is one)
    POWER_CSV    a header line, then one row per reading: a time column
                 (timestamp_ns, timestamp_us, timestamp_ms, or timestamp_s / timestamp /
                 time in seconds: Unix epoch, CLOCK_REALTIME, the clock torch.profiler
                 uses) and power_w / power_mw (instant power) and/or energy_j /
                 energy_mj (a cumulative counter)

    Both are converted into a phprof trace file, then reported as `phprof report` does.
    """
    from pathlib import Path

    from .importing import TraceImportError, import_trace

    if list_regions:
        _list_regions()
        return
    _intensity(region, carbon_intensity)  # bad options fail before the import
    src = Path(kineto_json)
    out = Path(output) if output else src.with_name(src.name.removesuffix(".gz").removesuffix(".json") + ".h5")
    try:
        import_trace(src, Path(power_csv), out, device=device, overwrite=overwrite)
    except (TraceImportError, FileNotFoundError, FileExistsError, PermissionError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported into {out}", err=True)
    _report(out, form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute=True)


@main.command()
@click.option("--task", help="Only the models of this task.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models(task, as_json) -> None:
    """List the built-in models (the study's), with their task and parameter count.

    Any other architecture works through a config.json path or a model directory.
    """
    from .models import TASKS, list_models

    if task and task not in TASKS:
        raise click.ClickException(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    infos = list_models(task or None)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(m) for m in infos], indent=2))
        return
    width = max(len(m.id) for m in infos)
    for m in infos:
        click.echo(f"{m.id:<{width}}  {m.task:<24} {m.model_type:<20} {m.params / 1e6:>9,.1f} M parameters")


if __name__ == "__main__":  # pragma: no cover
    main()
