"""An attribution as plain tables, and the roll-ups a reader wants from it.

:func:`to_results` turns an :class:`~phprof.attribution.attribute.Attribution`
into a summary (JSON-able scalars, lists, the notes) and column tables, the
form the trace file stores (``phprof.store.write_results``) and the report
renders, so a later command reads them back without recomputing.
:func:`rollups` derives per-inference, per-1,000, per-token, per-image and
carbon figures from a stored summary, for any grid intensity and PUE.
"""
from __future__ import annotations

import math

import numpy as np

from .. import carbon
from .attribute import Amount, Attribution

RESULTS_VERSION = 4  # 2: layers' parents, calls, inclusive intervals, leaves; 3: taxonomy; 4: stack_components


def _amount(a: Amount) -> dict:
    return {"joules": a.joules, "low_j": finite(a.low_j), "high_j": finite(a.high_j), "method": a.method}


def finite(x) -> float | None:
    """``x`` as a float, or None where it is None, NaN or infinite (no figure)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def plain(v):
    """``v`` with numpy arrays and scalars made Python ones and non-finite floats
    None: what ``json.dumps`` takes and what a JSON reader expects."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_results(att: Attribution, meta: dict) -> tuple[dict, dict]:
    """(summary, tables) of an attribution; ``meta``: the trace's metadata."""
    est = att.estimate
    static = att.static_j
    summary = {
        "results_version": RESULTS_VERSION,
        "model": meta.get("model"), "task": meta.get("task"), "device": att.device,
        "device_name": ((meta.get("sensor") or {}).get("devices") or {}).get(att.device) or meta.get("device_name"),
        "trace_status": att.status,
        "inferences": att.inferences, "span_s": att.span_s, "inference_s": att.inference_s,
        "batch_size": (meta.get("options") or {}).get("batch_size"),
        "total": _amount(att.total), "total_measured": att.total_measured,
        "inferences_energy": _amount(att.inferences_energy),
        "between_inferences_j": att.total.joules - att.inferences_energy.joules,
        "total_uncertainty_j": finite(att.total_uncertainty_j),
        "idle_w": finite(att.idle_w),
        "static_j": finite(static),
        "active_j": finite(att.inferences_energy.joules - static) if static is not None else None,
        "method": est.method, "interval": est.interval, "timeline": att.timeline,
        "sensor": {"period_s": att.sensor.period_s, "window_s": att.sensor.window_s, "lag_s": att.sensor.lag_s,
                   "source": att.sensor.source},
        "sensor_updates": est.updates, "residual_w": finite(est.residual_w), "scale": est.scale,
        "phases": {k: {**_amount(v), "count": att.phase_counts[k]} for k, v in att.phases.items()},
        "notes": list(dict.fromkeys(att.notes)),
    }
    rows = est.labels + [est.idle]
    tables = {
        "layers": {
            "label": [r.label for r in rows], "group": [r.group or r.label for r in rows],
            "parent": list(att.parents) + [""], "calls": np.array(list(att.calls) + [-1], np.int64),
            "component": [c.component for c in att.classes] + ["other"],
            "part": [c.part for c in att.classes] + [""], "stack": [c.stack for c in att.classes] + [""],
            "unclassified": np.array([c.unclassified for c in att.classes] + [False]),
            "module_type": list(att.module_types) + [""],
            "parameters": np.array(list(att.parameters) + [0], np.int64),
            "inclusive_low_j": [x[0] for x in att.inclusive] + [rows[-1].low_j],
            "inclusive_high_j": [x[1] for x in att.inclusive] + [rows[-1].high_j],
            "seconds": [r.seconds for r in rows], "power_w": [r.power_w for r in rows],
            "energy_j": [r.energy_j for r in rows], "low_j": [r.low_j for r in rows],
            "high_j": [r.high_j for r in rows], "method": [r.method for r in rows],
        },
        "groups": {
            "label": [g.label for g in est.groups], "seconds": [g.seconds for g in est.groups],
            "power_w": [g.power_w for g in est.groups], "energy_j": [g.energy_j for g in est.groups],
            "low_j": [g.low_j for g in est.groups], "high_j": [g.high_j for g in est.groups],
        },
        "inferences": {
            "energy_j": np.array([a.joules for a in att.per_inference]),
            "low_j": np.array([a.low_j for a in att.per_inference]),
            "high_j": np.array([a.high_j for a in att.per_inference]),
        },
        "components": {
            "component": list(att.components), "seconds": [v[0] for v in att.components.values()],
            "energy_j": [v[1].joules for v in att.components.values()],
            "low_j": [v[1].low_j for v in att.components.values()],
            "high_j": [v[1].high_j for v in att.components.values()],
            "method": [v[1].method for v in att.components.values()],
        },
        "stack_components": {
            "stack": [k.split("/")[0] for k in att.stack_components],
            "component": [k.split("/")[1] for k in att.stack_components],
            "seconds": [v[0] for v in att.stack_components.values()],
            "energy_j": [v[1].joules for v in att.stack_components.values()],
            "low_j": [v[1].low_j for v in att.stack_components.values()],
            "high_j": [v[1].high_j for v in att.stack_components.values()],
            "method": [v[1].method for v in att.stack_components.values()],
        },
        "leaves": {
            "layer": [x[0] for x in att.leaves], "name": [x[1] for x in att.leaves],
            "kind": [x[2] for x in att.leaves], "calls": np.array([x[3] for x in att.leaves], np.int64),
            "seconds": np.array([x[4] for x in att.leaves]), "energy_j": np.array([x[5] for x in att.leaves]),
        },
        "kernels": {
            "name": [k[0] for k in att.kernels], "calls": np.array([k[1] for k in att.kernels], np.int64),
            "seconds": np.array([k[2] for k in att.kernels]), "energy_j": np.array([k[3].joules for k in att.kernels]),
        },
    }
    return summary, tables


def _scaled(d: dict | None, factor: float) -> dict | None:
    if d is None:
        return None
    return {"joules": d["joules"] * factor,
            "low_j": None if d.get("low_j") is None else d["low_j"] * factor,
            "high_j": None if d.get("high_j") is None else d["high_j"] * factor, "method": d.get("method")}


def generated_tokens(summary: dict) -> int | None:
    """Tokens the run generated in all: one per prefill (its sequence's first) and
    one per decode step, per sequence of the batch; None for a run without them."""
    phases = summary.get("phases") or {}
    if "prefill" not in phases and "decode" not in phases:
        return None
    return sum(phases[k]["count"] for k in ("prefill", "decode") if k in phases) * (summary.get("batch_size") or 1)


def rollups(summary: dict, intensity: carbon.CarbonIntensity, pue: float = 1.0,
            training_kwh: float | None = None) -> dict:
    """Per inference, per 1,000 inferences, per token, per image, per step, and
    carbon, from a results summary. Energies are the device's whole draw (idle
    included, the pauses between inferences not); ``pue`` scales the carbon and the
    training parity to the facility's, the energies stay the device's."""
    n = summary["inferences"]
    total = summary["inferences_energy"]
    per_inf = _scaled(total, 1 / n)
    per_k = _scaled(total, 1000 / n)
    out = {
        "per_inference": per_inf,
        "per_1000": {**per_k, "wh": carbon.joules_to_wh(per_k["joules"]), "kwh": carbon.joules_to_kwh(per_k["joules"])},
        "pue": pue,
        "carbon": {
            "region": intensity.key, "name": intensity.name, "g_co2eq_per_kwh": intensity.g_co2eq_per_kwh,
            "year": intensity.year, "source": intensity.source,
            "per_1000_g": carbon.carbon_g(per_k["joules"], intensity, pue),
            "per_1000_low_g": None if per_k["low_j"] is None else carbon.carbon_g(per_k["low_j"], intensity, pue),
            "per_1000_high_g": None if per_k["high_j"] is None else carbon.carbon_g(per_k["high_j"], intensity, pue),
        },
    }
    phases = summary.get("phases") or {}
    if "prefill" in phases or "decode" in phases:
        # each prefill yields the first token of its sequence, each decode step one more
        if "prefill" in phases:
            out["per_prefill"] = _scaled(phases["prefill"], 1 / phases["prefill"]["count"])
        if "decode" in phases:
            out["per_decode_step"] = _scaled(phases["decode"], 1 / phases["decode"]["count"])
        out["tokens"] = tokens = generated_tokens(summary)
        out["per_token"] = _scaled(total, 1 / tokens)
    if "denoise" in phases:
        out["per_denoising_step"] = _scaled(phases["denoise"], 1 / phases["denoise"]["count"])
        out["per_image"] = _scaled(total, 1 / (n * (summary.get("batch_size") or 1)))
    if training_kwh is not None:
        out["parity"] = {"training_kwh": training_kwh,
                         "inferences": carbon.inferences_to_parity(training_kwh, per_inf["joules"], pue)}
    return out
