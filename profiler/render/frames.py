"""The frame tree every view renders: where the joules went, as nested frames.

Built from an attribution's stored tables (``/results``: layers with their
parent scope, and the kernels or ops inside each layer's own time), so the
renderers compute nothing. A frame is a module scope (its path), or a kernel
or op at its leaves; its energy is inclusive (itself and everything under it),
``self_j`` its own. The root ("all") holds the inferences' own energy, the
same figure as the report's "inferences' own" total; the time between
inferences is not a frame.
"""
from __future__ import annotations

import math

from ..attribution.components import KIND_OF, component_of
from ..attribution.timeline import OUTSIDE

ROOT = "all"


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def frame_tree(summary: dict, tables: dict, title: str | None = None) -> dict:
    """The frame tree of stored results (``phprof.attribution.results``)."""
    layers = tables["layers"]
    n = len(layers["label"])
    frames: dict[str, dict] = {}
    for i in range(n):
        label = str(layers["label"][i])
        if label == "(idle)":
            continue
        frames[label] = {
            "name": _display_name(label),
            "path": label,
            "kind": KIND_OF[str(layers["component"][i])] if "component" in layers else component_of(label),
            "component": str(layers["component"][i]) if "component" in layers else "",
            "energy_j": 0.0,
            "self_j": float(layers["energy_j"][i]),
            "seconds": 0.0,
            "self_s": float(layers["seconds"][i]),
            "low_j": _num(layers["inclusive_low_j"][i]),
            "high_j": _num(layers["inclusive_high_j"][i]),
            "self_low_j": _num(layers["low_j"][i]),
            "self_high_j": _num(layers["high_j"][i]),
            "calls": int(layers["calls"][i]) if int(layers["calls"][i]) >= 0 else None,
            "method": str(layers["method"][i]),
            "children": [],
        }
    root = {"name": ROOT, "path": ROOT, "kind": "other", "energy_j": 0.0, "self_j": 0.0, "seconds": 0.0,
            "self_s": 0.0, "low_j": None, "high_j": None, "calls": summary["inferences"],
            "method": summary["method"], "children": []}
    for i in range(n):
        label = str(layers["label"][i])
        if label not in frames:
            continue
        parent_label = str(layers["parent"][i])
        parent = frames.get(parent_label, root)
        if label.startswith(parent_label + ".") and parent_label != OUTSIDE:
            frames[label]["name"] = label[len(parent_label) + 1:]  # "h.0" under "transformer"
        parent["children"].append(frames[label])
    leaves = tables.get("leaves") or {}
    for layer, name, kind, calls, sec, joules in zip(leaves.get("layer", []), leaves.get("name", []),
                                                    leaves.get("kind", []), leaves.get("calls", []),
                                                    leaves.get("seconds", []), leaves.get("energy_j", [])):
        owner = frames.get(str(layer))
        if owner is None:
            continue
        owner["children"].append({
            "name": str(name), "path": f"{layer};{name}", "kind": str(kind), "energy_j": float(joules),
            "self_j": float(joules), "seconds": float(sec), "self_s": float(sec), "low_j": None, "high_j": None,
            "calls": int(calls), "method": "its layer's power x its time", "children": []})
        # the leaves' share comes out of the layer's own energy and time
        owner["self_j"] = max(owner["self_j"] - float(joules), 0.0)
        owner["self_s"] = max(owner["self_s"] - float(sec), 0.0)
    add_up(root)
    root["low_j"], root["high_j"] = (summary["inferences_energy"].get("low_j"),
                                     summary["inferences_energy"].get("high_j"))
    return {"title": title or f"{summary.get('model')} ({summary.get('task')})", "unit": "J",
            "inferences": summary["inferences"], "interval": summary["interval"], "total_j": root["energy_j"],
            "method": summary["method"], "device": summary.get("device_name") or summary.get("device"),
            "root": root}


def _display_name(label: str) -> str:
    """A frame's name (shortened to the part after its parent's path when it is
    attached): "inference" for the time outside every module, which encloses them."""
    return "inference" if label == OUTSIDE else label


def add_up(frame: dict) -> None:
    """Inclusive energy and time of every frame from the ``self_`` values, bottom
    up, and children largest first (iterative: module trees can be deep)."""
    order, stack = [], [frame]
    while stack:
        f = stack.pop()
        order.append(f)
        stack.extend(f["children"])
    for f in reversed(order):
        f["energy_j"] = f["self_j"] + sum(c["energy_j"] for c in f["children"])
        f["seconds"] = f["self_s"] + sum(c["seconds"] for c in f["children"])
        f["children"].sort(key=lambda c: -c["energy_j"])
