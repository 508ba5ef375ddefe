"""The study's table: one row per cell, from its trace's report, and the paper's figures beside it.

A cell's row (:func:`cell_row`) holds what does not depend on the grid's carbon intensity: the
model and task, its parameters as traced, device and sensor, time per inference, and the energy
per inference with its interval, method and whether it was measured or estimated (that of
`phprof report`: the inferences' own energy, the time between them left out), per token and per
image where the task makes them; and the run's whole energy (the device's counter over the
inferences' span, the time between them included: what the study itself measured) per 1,000,
with the counter's bound. It is kept in the cell's manifest; :func:`study_view` adds the
carbon at the intensity asked for and the comparison with the paper (``profiler/data/paper_study.csv``).
"""
from __future__ import annotations

import csv
import io
import os
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import carbon
from .grid import TASK_SPECIFIC_OF, ZERO_SHOT_TASKS, Cell

PAPER_FILE = "paper_study.csv"
PAPER_SETUP = ("A100-SXM4-80GB (one of an 8-GPU AWS node, us-west-2)",
               "CodeCarbon, whole node: the 7 idle GPUs, a RAM guess and the CPU's TDP included")

# the columns of study.csv, in order (study.json's cells have the same keys)
COLUMNS = [
    "task", "model", "kind", "modality", "parameters", "size", "status", "device", "device_name", "sensor",
    "inferences", "seconds_per_inference", "energy", "energy_method", "interval",
    "j_per_inference", "j_per_inference_low", "j_per_inference_high",
    "kwh_per_1000", "kwh_per_1000_low", "kwh_per_1000_high",
    "run_energy", "run_method", "run_kwh_per_1000", "run_kwh_per_1000_low", "run_kwh_per_1000_high",
    "gco2eq_per_1000", "gco2eq_per_1000_low", "gco2eq_per_1000_high", "carbon_g_per_kwh", "carbon_grid", "pue",
    "j_per_token", "j_per_image", "why_no_energy", "error", "trace", "report",
]


def _per_1000_kwh(joules_per_inference):
    return None if joules_per_inference is None else carbon.joules_to_kwh(joules_per_inference * 1000)


def cell_row(cell: Cell, trace_path: Path, report_path: Path, directory: Path) -> dict:
    """The row of a complete cell (see the module's docstring); writes its report page to ``report_path``."""
    from ..api import render, report
    from ..store import load_header

    head = load_header(trace_path)
    view = report(trace_path)
    render(view, report_path)
    r, roll = view.results, view.rollups
    summary = head.summary
    row = {
        "task": cell.task, "model": cell.model, "kind": "multi-purpose" if cell.multi_purpose else "task-specific",
        "modality": cell.modality, "parameters": _parameters(cell, head),
        "size": head.meta.get("options", {}).get("size", ""), "status": "done",
        "device": summary.get("device", ""), "device_name": r.device_name or head.meta.get("device_name") or "",
        "sensor": summary.get("power_source", ""), "inferences": r.inferences,
        # the measurement pass's (the profiler off) where the cell ran one, as its energies are
        "seconds_per_inference": (m.seconds_per_inference if (m := r.measurement_pass) is not None and m.inferences
                                  else r.inference_s / r.inferences if r.inferences else None),
        "energy": "not measured", "energy_method": "", "interval": "", "run_energy": "not measured",
        "j_per_inference": None, "j_per_inference_low": None, "j_per_inference_high": None,
        "j_per_token": None, "j_per_image": None, "error": "",
        "why_no_energy": (r.why_no_energy or "").replace(str(trace_path), "its trace"),
        "trace": os.path.relpath(trace_path, directory), "report": os.path.relpath(report_path, directory),
    }
    if roll is not None:
        e = roll.per_inference
        row.update(energy=e.kind, energy_method=e.method_text,
                   interval="bound" if e.bound else f"{r.interval:.0%}" if e.has_range else "",
                   j_per_inference=e.joules, j_per_inference_low=e.low_j, j_per_inference_high=e.high_j,
                   j_per_token=None if roll.per_token is None else roll.per_token.joules,
                   j_per_image=None if roll.per_image is None else roll.per_image.joules)
        m = r.measurement_pass  # the whole run: the measurement pass's span (no profiler, no window saves)
        whole = m.energy.scaled(1000 / m.inferences) if m is not None and m.energy is not None and m.inferences \
            else r.total.scaled(1000 / r.inferences)
        row.update(run_energy=whole.kind, run_method=whole.method_text,
                   **{f"run_kwh_per_1000{s}": _kwh(getattr(whole, j)) for s, j in
                      (("", "joules"), ("_low", "low_j"), ("_high", "high_j"))})
    return row


def _kwh(joules):
    return None if joules is None else carbon.joules_to_kwh(joules)


def _parameters(cell: Cell, head) -> int | None:
    """The parameters of the model as traced (its size), tied weights once: from a build on the meta device."""
    from ..models import estimate_footprint, resolve

    try:
        return estimate_footprint(resolve(cell.model), cell.task, size=head.meta.get("options", {}).get("size", "full")
                                  ).params
    except Exception:  # noqa: BLE001  (it was traced, so it builds; else none rather than a wrong count)
        return None


def failed_row(cell: Cell, error: str) -> dict:
    row = {k: None for k in COLUMNS}
    row.update(task=cell.task, model=cell.model, kind="multi-purpose" if cell.multi_purpose else "task-specific",
               modality=cell.modality, status="failed", energy="not measured",
               error=error, why_no_energy="the cell failed", run_energy="not measured")
    return row


def with_carbon(row: dict, intensity: carbon.CarbonIntensity, pue: float, folder: Path, to: Path) -> dict:
    """The row with its per-1,000 energy in kWh and gCO2eq at a grid's intensity, and its files'
    paths relative to ``to`` (they are relative to the cell's study folder ``folder``)."""
    out = {k: row.get(k) for k in COLUMNS}
    for suffix in ("", "_low", "_high"):
        kwh = _per_1000_kwh(row.get(f"j_per_inference{suffix}"))
        out[f"kwh_per_1000{suffix}"] = kwh
        out[f"gco2eq_per_1000{suffix}"] = None if kwh is None else \
            carbon.carbon_g(kwh * carbon.JOULES_PER_KWH, intensity, pue)
    out["carbon_g_per_kwh"], out["carbon_grid"], out["pue"] = intensity.g_co2eq_per_kwh, intensity.name, pue
    for key in ("trace", "report"):
        if row.get(key):
            out[key] = os.path.relpath(folder / row[key], to)
    return out


# ---- the paper's figures --------------------------------------------------------------------
@dataclass(frozen=True)
class PaperFigure:
    kind: str  # "task" (its mean over the task's models) or "model"
    key: str  # a task or a model id
    paper_text: str  # how paper.md names it
    kwh_per_1000: float


def paper_figures() -> list[PaperFigure]:
    """The study's own figures (``profiler/data/paper_study.csv``, whose comments cite them)."""
    text = resources.files("phprof").joinpath("data", PAPER_FILE).read_text(encoding="utf-8")
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("#")]
    return [PaperFigure(r["kind"], r["key"], r["paper_text"], float(r["kwh_per_1000"]))
            for r in csv.DictReader(io.StringIO("\n".join(lines)))]


def paper_source() -> str:
    """Where the data file's figures come from (its ``# source:`` lines)."""
    text = resources.files("phprof").joinpath("data", PAPER_FILE).read_text(encoding="utf-8")
    return " ".join(x.removeprefix("# source:").strip() for x in text.splitlines() if x.startswith("# source:"))


@dataclass(frozen=True)
class Comparison:
    """This run's mean kWh per 1,000 of a task (or a model) beside the paper's."""

    kind: str
    key: str
    paper_kwh: float
    kwh: float | None  # the mean over this run's cells with energy; None: none measured
    low: float | None  # the mean of their intervals' ends
    high: float | None
    cells: int  # this run's cells of it (with energy)
    devices: str
    sensors: str

    @property
    def ratio(self) -> float | None:
        return None if self.kwh is None else self.kwh / self.paper_kwh


def comparisons(rows: list[dict]) -> list[Comparison]:
    out = []
    for p in paper_figures():
        mine = [r for r in rows if r["status"] == "done" and (r["task"] if p.kind == "task" else r["model"]) == p.key]
        measured = [r for r in mine if r.get("kwh_per_1000") is not None]

        def mean(key):
            values = [r[key] for r in measured]
            return statistics.fmean(values) if values and None not in values else None

        out.append(Comparison(p.kind, p.key, p.kwh_per_1000, mean("kwh_per_1000"), mean("kwh_per_1000_low"),
                              mean("kwh_per_1000_high"), len(measured),
                              ", ".join(sorted({r["device_name"] or r["device"] for r in mine})),
                              ", ".join(sorted({r["sensor"] for r in mine}))))
    return out


# ---- the view ---------------------------------------------------------------------------------
@dataclass
class StudyView:
    """A study's rows, its comparison with the paper and what it ran with: what the study's
    renderers show (``phprof.render(view, "study.html")``...)."""

    VIEW = "study"

    rows: list[dict]  # one per cell of the grid that is done or failed, in the grid's order (with carbon)
    comparison: list[Comparison]
    options: dict  # the cells' options
    grid: str  # which carbon intensity, which grid, what is missing: said on the page
    carbon: str
    paper_source: str
    paper_setup: tuple[str, str] = PAPER_SETUP
    missing: list[str] = field(default_factory=list)  # cells of the grid not run (yet)
    notes: list[str] = field(default_factory=list)
    columns: tuple[str, ...] = tuple(COLUMNS)

    @property
    def has_energy(self) -> bool:
        return any(r.get("kwh_per_1000") is not None for r in self.rows)

    @property
    def zero_shot(self) -> dict[str, str]:
        return {z: TASK_SPECIFIC_OF[z] for z in ZERO_SHOT_TASKS}


def study_view(rows: list[dict], options: dict, grid: str, intensity: carbon.CarbonIntensity, pue: float,
               missing: list[str]) -> StudyView:
    notes = []
    done = [r for r in rows if r["status"] == "done"]
    if done and not any(r.get("kwh_per_1000") is not None for r in done):
        whys = sorted({r["why_no_energy"] for r in done if r["why_no_energy"]})
        notes.append("energy was not measured on this machine (" + "; ".join(whys) + "): every figure is time, "
                     "measured by the profiler")
    if options.get("size") == "tiny":
        notes.append("tiny sizes: each model shrunk to 2 narrow layers; its energy is not the real model's, and "
                     "the ratios to the paper are no reproduction")
    if options.get("inferences", 1000) < 1000:
        notes.append(f"{options['inferences']} inferences per cell (the study's unit is 1,000: figures per 1,000 "
                     "are scaled)")
    sensors = sorted({r["sensor"] for r in done if r.get("sensor")})
    if sensors:
        notes.append("sensors: " + "; ".join(sensors))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        notes.append(f"{len(failed)} cells failed: " + "; ".join(f"{r['task']} / {r['model']}: {r['error']}"
                                                               for r in failed))
    pue_text = "" if pue == 1 else f", PUE {pue:g}"
    return StudyView(rows, comparisons(rows), options, grid,
                     f"{intensity.g_co2eq_per_kwh:g} gCO2eq/kWh ({intensity.name}, {intensity.source}){pue_text}",
                     paper_source(), missing=missing, notes=notes)
