"""The frame tree every view renders: where the joules went, as nested frames.

Built from an attribution's stored tables (``/results``: layers with their
parent scope, and the kernels or ops inside each layer's own time), so the
renderers compute nothing. A frame is a module scope (its path), or a kernel
or op at its leaves; its energy is inclusive (itself and everything under it),
``self_j`` its own. The root ("all") holds the inferences' own energy, the
same figure as the report's "inferences' own" total; the time between
inferences is not a frame. :func:`diff_tree` joins two runs' trees into the
differential flamegraph's tree.
"""
from __future__ import annotations

from typing import Sequence

from ..attribution.components import KIND_OF, component_of
from ..attribution.estimate import IDLE
from ..attribution.results import finite
from ..attribution.timeline import OUTSIDE

ROOT = "all"


def frame_tree(summary: dict, tables: dict, title: str | None = None) -> dict:
    """The frame tree of stored results (``phprof.attribution.results``)."""
    layers = tables["layers"]
    n = len(layers["label"])
    frames: dict[str, dict] = {}
    for i in range(n):
        label = str(layers["label"][i])
        if label == IDLE:
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
            "low_j": finite(layers["inclusive_low_j"][i]),
            "high_j": finite(layers["inclusive_high_j"][i]),
            "self_low_j": finite(layers["low_j"][i]),
            "self_high_j": finite(layers["high_j"][i]),
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


# ---- the differential flamegraph's tree ------------------------------------------------------
def diff_tree(tree_a: dict, tree_b: dict, names: Sequence[str] = ("A", "B")) -> dict:
    """The union of two frame trees (:func:`frame_tree`) by path, per inference of
    each. Every frame keeps both runs' inclusive energies (``a_j``, ``b_j``; 0 where
    a run lacks the frame), own energies, intervals (None where a run lacks the
    frame or has no interval for it) and times.

    Its width (``energy_j``) is a layout width, not either run's energy: the
    larger of its two own energies plus its children's widths, so a frame is
    never narrower than either run's energy (a frame only A has stays visible)
    and children always fit. It can exceed both runs' energies (and the root's
    both runs' totals) where A spends more in one child and B in another."""
    na, nb = max(int(tree_a.get("inferences") or 1), 1), max(int(tree_b.get("inferences") or 1), 1)

    def per(x, n):
        return None if x is None else float(x) / n

    def join(fa: dict | None, fb: dict | None) -> dict:
        f = fb or fa
        out = {
            "name": f["name"], "path": f["path"], "kind": f.get("kind") or "other",
            "a_j": per(fa["energy_j"], na) if fa else 0.0, "b_j": per(fb["energy_j"], nb) if fb else 0.0,
            "a_self_j": per(fa["self_j"], na) if fa else 0.0, "b_self_j": per(fb["self_j"], nb) if fb else 0.0,
            # no interval where a run lacks the frame: its 0 J there is not a measured [0, 0]
            "a_low_j": per(fa.get("low_j"), na) if fa else None, "a_high_j": per(fa.get("high_j"), na) if fa else None,
            "b_low_j": per(fb.get("low_j"), nb) if fb else None, "b_high_j": per(fb.get("high_j"), nb) if fb else None,
            "a_s": per(fa.get("seconds") or 0.0, na) if fa else 0.0,
            "b_s": per(fb.get("seconds") or 0.0, nb) if fb else 0.0,
            "low_j": None, "high_j": None, "calls": None,
            "method": _diff_method(fa, fb, names),
            "children": [],
        }
        out["self_j"] = max(out["a_self_j"], out["b_self_j"])
        out["self_s"] = max(per(fa.get("self_s") or 0.0, na) if fa else 0.0,
                            per(fb.get("self_s") or 0.0, nb) if fb else 0.0)
        return out

    root = join(tree_a["root"], tree_b["root"])
    stack = [(root, tree_a["root"], tree_b["root"])]
    while stack:
        out, fa, fb = stack.pop()
        ca = {c["path"]: c for c in (fa["children"] if fa else [])}
        cb = {c["path"]: c for c in (fb["children"] if fb else [])}
        pairs = [(ca.get(p), cb.get(p)) for p in dict.fromkeys(list(cb) + list(ca))]
        if fa is not None and fb is not None and fa["path"] == fb["path"] == OUTSIDE:
            pairs = _pair_models(pairs)
        for ka, kb in pairs:
            child = join(ka, kb)
            if ka is not None and kb is not None and ka["path"] != kb["path"]:
                child["name"] = f"{ka['name']} → {kb['name']}"
            out["children"].append(child)
            stack.append((child, ka, kb))
    add_up(root)
    return {"title": f"{names[1]} vs {names[0]}", "unit": "J", "inferences": 1,
            "interval": tree_b.get("interval") or tree_a.get("interval"), "total_j": root["energy_j"],
            "method": "per inference of each run", "device": None, "root": root,
            "diff": {"names": list(names[:2]), "a_j": root["a_j"], "b_j": root["b_j"]}}


def _pair_models(pairs: list[tuple]) -> list[tuple]:
    """Under the time outside every module: the model's own scope, named by its class
    (``GPT2LMHeadModel``, ``T5ForConditionalGeneration``), is one frame of both runs
    even where the classes differ, so that the modules inside it (``lm_head``...) line
    up by path."""
    only_a = [i for i, (x, y) in enumerate(pairs) if y is None and _is_model(x)]
    only_b = [i for i, (x, y) in enumerate(pairs) if x is None and _is_model(y)]
    if len(only_a) != 1 or len(only_b) != 1:
        return pairs
    ia, ib = only_a[0], only_b[0]
    joined = (pairs[ia][0], pairs[ib][1])
    return [joined if i == ib else p for i, p in enumerate(pairs) if i != ia]


def _is_model(frame: dict) -> bool:
    """A model's own scope: named by its class (``T5ForConditionalGeneration``), where
    every other scope is a path of attribute names (``encoder``, ``lm_head``)."""
    path = frame["path"]
    return "." not in path and ";" not in path and path[:1].isupper() and frame.get("kind") not in ("kernel", "op")


def _diff_method(fa, fb, names) -> str:
    ma, mb = (fa or {}).get("method") or "", (fb or {}).get("method") or ""
    if fa is None:
        return f"only in {names[1]}: {mb}"
    if fb is None:
        return f"only in {names[0]}: {ma}"
    return ma if ma == mb else f"{names[0]}: {ma}; {names[1]}: {mb}"
