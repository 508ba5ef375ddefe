"""The frame tree every view renders: where the joules went, as nested frames.

Built from a trace's results (``phprof.store.results``: layers with their
parent scope, and the kernels or ops inside each layer's own time), so the
renderers compute nothing. A frame is a module scope (its path), or a kernel
or op at its leaves; its energy is inclusive (itself and everything under it),
``self_j`` its own. The root ("all") holds the inferences' own energy, the
same figure as the report's "inferences' own" total; the time between
inferences is not a frame. A trace without energy gives a tree of times only
(``measure`` "time", every energy None). :func:`diff_tree` joins two runs'
trees into the differential flamegraph's tree.
"""
from __future__ import annotations

from typing import Sequence

from ..store.results import Results, Role
from .palette import kind_of

ROOT = "all"
TIME_ONLY = "time, energy not measured"  # what a tree of a trace without energy shows


def frame_tree(results: Results, title: str | None = None) -> dict:
    """The frame tree of a trace's results (see the module's docstring). A run attributed
    over several devices has a device level under each layer: the layer's own energy and time
    on each GPU (against that GPU's sensor), its kernels under it."""
    energy = results.has_energy
    several = results.several_devices
    frames: dict[str, dict] = {}
    on_device: dict[tuple[str, str], dict] = {}  # (label, device) -> its device frame
    for x in results.layers:
        if x.role.between_inferences:
            continue
        if several:
            _add_device_frame(frames, on_device, x, energy, results)
            continue
        frames[x.label] = {
            "name": _display_name(x),
            "path": x.label,
            "kind": kind_of(x.component),
            "component": x.component,
            "energy_j": 0.0 if energy else None,
            "self_j": x.energy.joules if energy else None,
            "seconds": 0.0,
            "self_s": x.seconds,
            "low_j": x.inclusive_low_j,
            "high_j": x.inclusive_high_j,
            "self_low_j": x.energy.low_j if energy else None,
            "self_high_j": x.energy.high_j if energy else None,
            "calls": x.calls if x.calls >= 0 else None,
            "method": x.energy.method_text if energy else TIME_ONLY,
            "children": [],
        }
    root = {"name": ROOT, "path": ROOT, "kind": "other", "energy_j": 0.0 if energy else None,
            "self_j": 0.0 if energy else None, "seconds": 0.0, "self_s": 0.0, "low_j": None, "high_j": None,
            "calls": results.inferences, "method": results.method.text() if energy else TIME_ONLY, "children": []}
    if several and energy:
        root["method"] += (" (each GPU against its own sensor: "
                           + ", ".join(d.device for d in results.attributed_devices) + ")")
    attached = set()
    for x in results.layers:
        if x.label not in frames or x.label in attached:
            continue
        attached.add(x.label)
        parent = frames.get(x.parent, root)
        if x.parent and x.label.startswith(x.parent + "."):
            frames[x.label]["name"] = x.label[len(x.parent) + 1:]  # "h.0" under "transformer"
        parent["children"].append(frames[x.label])
    for leaf in results.leaves:
        owner = on_device.get((leaf.layer, leaf.device)) if several else frames.get(leaf.layer)
        if owner is None:
            continue
        joules = leaf.energy.joules if energy else None
        owner["children"].append({
            "name": leaf.name, "path": f"{leaf.layer};{leaf.device + ';' if several else ''}{leaf.name}",
            "kind": leaf.kind, "energy_j": joules,
            "self_j": joules, "seconds": leaf.seconds, "self_s": leaf.seconds, "low_j": None, "high_j": None,
            "calls": leaf.calls, "method": leaf.energy.method_text if energy else TIME_ONLY, "children": []})
        # the leaves' share comes out of the layer's own energy and time
        if energy:
            owner["self_j"] = max(owner["self_j"] - joules, 0.0)
        owner["self_s"] = max(owner["self_s"] - leaf.seconds, 0.0)
    add_up(root)
    if energy:
        root["low_j"], root["high_j"] = results.inferences_energy.low_j, results.inferences_energy.high_j
    title = title or f"{results.model} ({results.task})"
    return {"title": title if energy else f"{title}: {TIME_ONLY}", "unit": "J" if energy else "s",
            "measure": "energy" if energy else "time", "inferences": results.inferences,
            "interval": results.interval if energy else None, "total_j": root["energy_j"],
            "method": root["method"] if energy else None, "device": results.device_name or results.device or None,
            "root": root}


def _add_device_frame(frames: dict, on_device: dict, x, energy: bool, results: Results) -> None:
    """A layer's row on one device: its device frame under the layer's frame (made at its first row)."""
    if x.label not in frames:
        frames[x.label] = {
            "name": _display_name(x), "path": x.label, "kind": kind_of(x.component), "component": x.component,
            "energy_j": 0.0 if energy else None, "self_j": 0.0 if energy else None, "seconds": 0.0, "self_s": 0.0,
            "low_j": x.inclusive_low_j, "high_j": x.inclusive_high_j, "self_low_j": None, "self_high_j": None,
            "calls": x.calls if x.calls >= 0 else None,
            "method": "its devices' parts added" if energy else TIME_ONLY, "children": [], "devices": []}
    layer = frames[x.label]
    if layer["devices"]:  # on several devices: one device's inclusive interval is not the layer's
        layer["low_j"] = layer["high_j"] = None
    layer["devices"].append(x.device)
    d = results.device_row(x.device)
    where = f"{x.device} ({d.cuda})" if d is not None and d.cuda else x.device
    frame = {"name": where, "path": f"{x.label};{x.device}", "kind": "device", "device": x.device,
             "energy_j": x.energy.joules if energy else None, "self_j": x.energy.joules if energy else None,
             "seconds": x.seconds, "self_s": x.seconds, "low_j": x.energy.low_j if energy else None,
             "high_j": x.energy.high_j if energy else None, "calls": None,
             "method": f"{x.energy.method_text}, against {x.device}'s sensor" if energy else TIME_ONLY,
             "children": []}
    layer["children"].append(frame)
    on_device[(x.label, x.device)] = frame


def _display_name(layer) -> str:
    """A frame's name (shortened to the part after its parent's path when it is
    attached): "inference" for the time outside every module, which encloses them."""
    return "inference" if layer.role is Role.OUTSIDE_MODULES else layer.label


def add_up(frame: dict) -> None:
    """Inclusive energy and time of every frame from the ``self_`` values, bottom
    up, and children largest first, by energy (by time in a tree without energy;
    iterative: module trees can be deep)."""
    order, stack = [], [frame]
    while stack:
        f = stack.pop()
        order.append(f)
        stack.extend(f["children"])
    for f in reversed(order):
        if f["self_j"] is not None:
            f["energy_j"] = f["self_j"] + sum(c["energy_j"] for c in f["children"])
        f["seconds"] = f["self_s"] + sum(c["seconds"] for c in f["children"])
        f["children"].sort(key=lambda c: -(c["energy_j"] if c["energy_j"] is not None else c["seconds"]))


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
        if fa is not None and fb is not None and fa["path"] == fb["path"] == Role.OUTSIDE_MODULES.label:
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
