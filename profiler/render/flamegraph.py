"""The interactive energy flamegraph: one self-contained HTML page, the core of
every page phprof writes (the report and comparison pages add their sections
around it, styled by the same stylesheet).

The page holds everything it needs (script, style, the palette and the data as
JSON in a ``<script type="application/json" id="phprof-data">`` tag), so it
opens from a file with no network. Frames too small to see are merged in Python before the
data is embedded: under each parent, the children whose share of the total is
below ``min_share`` in both energy and time become one "(n smaller frames)"
frame, so the page stays small and fast for trees of any size.

The data is columnar (one array per field, frames in pre-order with the index
of their parent) and strings are interned in one table, so a frame costs a few
numbers. The drawing code is ``flamegraph.js`` and the one stylesheet of every
page ``page.css``, next to this module, read at render time and inlined; the
kinds' colours come from ``phprof.render.palette``.

The same page draws a differential flamegraph (:func:`diff_flamegraph_html`): the
union of two runs' frames by path (``phprof.render.frames.diff_tree``), each frame
as wide as a layout width (its larger own energy plus its children's widths: at
least either run's energy, and possibly more than both), coloured by (B - A) / A;
the tree's ``diff`` entry and its frames' ``a_*`` / ``b_*`` fields switch the
script to it. A tree of times only (``measure`` "time": a trace without energy)
is drawn by time, its title saying that energy was not measured.
"""
from __future__ import annotations

import html
import json
import math
from importlib import resources

from .base import Renderer, register
from .frames import diff_tree, frame_tree
from .palette import KINDS

COLLAPSED = "collapsed"  # the kind of a "(n smaller frames)" frame
# a differential tree's per-run columns (diff_tree), embedded when the tree has "diff"
DIFF_KEYS = ("a_j", "b_j", "a_self_j", "b_self_j", "a_low_j", "a_high_j", "b_low_j", "b_high_j", "a_s", "b_s")


def flamegraph_html(tree: dict, *, title: str | None = None, min_share: float = 0.001, before: str = "",
                    after: str = "") -> str:
    """The flamegraph page of a frame tree (``phprof.render.frames``) as one HTML string;
    ``before`` and ``after``: more of the page (trusted HTML) around the flamegraph."""
    data = embedded_data(tree, title=title, min_share=min_share)
    page_title = data["title"]
    script = _asset("flamegraph.js")
    style = _asset("page.css")
    return _PAGE.format(
        title=html.escape(page_title),
        style=style,
        data=_json_for_script(data),
        script=script,
        before=before,
        after=after,
    )


def diff_flamegraph_html(tree_a: dict, tree_b: dict, names=("A", "B"), *, title: str | None = None,
                         min_share: float = 0.001, before: str = "", after: str = "") -> str:
    """The differential flamegraph of two frame trees (B against A) as one HTML page:
    frames are the union of both runs' by path, per inference; a frame's width is a
    layout width, at least either run's energy (so a frame only A has stays visible)
    and possibly more than both (:func:`~phprof.render.frames.diff_tree`); colours
    (B - A) / A: red where B spends more, blue where less, grey within 1%.
    ``names``: the two runs'."""
    return flamegraph_html(diff_tree(tree_a, tree_b, names), title=title, min_share=min_share, before=before,
                           after=after)


def embedded_data(tree: dict, *, title: str | None = None, min_share: float = 0.001) -> dict:
    """What the page embeds: the tree's header fields and its frames, merged
    below ``min_share`` and laid out in columns (see the module's docstring)."""
    root = tree["root"]
    total_j = _finite(tree.get("total_j", root["energy_j"])) or 0.0
    total_s = float(root["seconds"])
    strings: list[str] = []
    index: dict[str, int] = {}

    def intern(s) -> int:
        s = "" if s is None else str(s)
        i = index.get(s)
        if i is None:
            i = index[s] = len(strings)
            strings.append(s)
        return i

    diff = tree.get("diff")
    keys = ("energy_j", "self_j", "seconds", "self_s", "low_j", "high_j") + (DIFF_KEYS if diff else ())
    cols = {k: [] for k in ("parent", "name", "path", "kind", "calls", "method", "merged") + keys}
    kept_floor_j = min_share * total_j if total_j > 0 else math.inf
    kept_floor_s = min_share * total_s if total_s > 0 else math.inf
    n_in = 0

    def add(frame: dict, parent: int, merged: int = 0) -> int:
        i = len(cols["parent"])
        cols["parent"].append(parent)
        cols["name"].append(intern(frame["name"]))
        cols["path"].append(intern(frame["path"]))
        cols["kind"].append(intern(frame.get("kind") or "other"))
        for key in keys:
            cols[key].append(_finite(frame.get(key)))
        calls = frame.get("calls")
        cols["calls"].append(None if calls is None else int(calls))
        cols["method"].append(intern(frame.get("method") or ""))
        cols["merged"].append(merged)
        return i

    # pre-order walk with an explicit stack: module trees can be deep
    stack: list[tuple[dict, int, bool]] = [(root, -1, False)]
    while stack:
        frame, parent, is_merged = stack.pop()
        if is_merged:
            add(frame, parent, merged=frame.pop("merged"))
            continue
        n_in += 1
        me = add(frame, parent)
        children = frame.get("children") or []
        big, small = [], []
        for c in children:
            if abs(c["energy_j"] or 0.0) >= kept_floor_j or abs(c.get("seconds") or 0.0) >= kept_floor_s:
                big.append(c)
            else:
                small.append(c)
        if len(small) == 1:
            big.append(small.pop())  # merging one frame gains nothing (its children may merge)
        big.sort(key=lambda c: -(c["energy_j"] if c["energy_j"] is not None else c.get("seconds") or 0.0))
        if small:  # pushed first: drawn after (right of) its bigger siblings
            merged = _merge(small, frame["path"], diff is not None)
            merged["merged"] = _count(small)  # they and their descendants, never walked
            n_in += merged["merged"]
            stack.append((merged, me, True))
        for c in reversed(big):  # reversed: popped in order, biggest first
            stack.append((c, me, False))
    data = {
        "title": title or tree.get("title") or "phprof flamegraph",
        "unit": tree.get("unit", "J"),
        "inferences": int(tree.get("inferences") or 1),
        "interval": tree.get("interval"),
        "total_j": total_j,
        "method": tree.get("method"),
        "device": tree.get("device"),
        "measure": tree.get("measure", "energy"),
        "palette": KINDS,
        "min_share": min_share,
        "frames_in": n_in,
        "frames_out": len(cols["parent"]),
        "strings": strings,
        "frames": cols,
    }
    if diff:
        data["diff"] = {"names": [str(x) for x in diff["names"]], "a_j": _finite(diff.get("a_j")),
                        "b_j": _finite(diff.get("b_j"))}
    return data


def _merge(frames: list[dict], parent_path: str, diff: bool = False) -> dict:
    """One frame standing for ``frames`` (siblings): their sums, and no interval (the
    sum of the members' interval ends is not an interval of the sum: the bootstrap
    draws that would give one are not stored). ``diff``: also each run's sums."""
    n = len(frames)
    calls = [f.get("calls") for f in frames]
    methods = {f.get("method") or "" for f in frames}
    name = f"({n} smaller frames)"
    theirs = methods.pop() if len(methods) == 1 else "mixed methods"
    out = {
        "name": name,
        "path": f"{parent_path};{name}",
        "kind": COLLAPSED,
        "energy_j": _sum(f["energy_j"] for f in frames),
        "self_j": _sum(f["energy_j"] for f in frames),
        "seconds": sum(f.get("seconds") or 0.0 for f in frames),
        "self_s": sum(f.get("seconds") or 0.0 for f in frames),
        "low_j": None,
        "high_j": None,
        "calls": None if any(x is None for x in calls) else sum(calls),
        "method": f"merge of {n} frames; theirs: {theirs or 'unknown'}",
    }
    if diff:
        for key in DIFF_KEYS:
            if key.endswith(("_low_j", "_high_j")):
                out[key] = None  # a sum of interval ends is not an interval
                continue
            values = [f.get(key) for f in frames]
            out[key] = None if any(v is None for v in values) else sum(values)
        out["a_self_j"], out["b_self_j"] = out["a_j"], out["b_j"]  # its members' whole energy is its own
    return out


def _sum(values) -> float | None:
    """A sum of frames' energies; None where they have none (a tree of times only)."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _finite(x) -> float | None:
    """``x`` as a float, or None where it is None, NaN or infinite (no figure)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _count(frames: list[dict]) -> int:
    """How many frames ``frames`` and their descendants are."""
    n, stack = 0, list(frames)
    while stack:
        f = stack.pop()
        n += 1
        stack.extend(f.get("children") or ())
    return n


def _json_for_script(data: dict) -> str:
    """JSON safe inside a <script> element: no "</script>", no "<!--"."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{style}
</style>
</head>
<body>
{before}
<header id="head">
  <h1 id="title"></h1>
  <div id="summary"></div>
  <p id="explain"></p>
  <div id="controls">
    <input id="search" type="search" placeholder="Search frames (name or path)" autocomplete="off" spellcheck="false">
    <span id="match"></span>
    <span class="switch" role="group" aria-label="Width">Width:
      <button id="mode-energy" type="button" class="on">energy</button><button id="mode-time" type="button">time</button>
    </span>
    <button id="invert" type="button" title="Root at the top (icicle) or at the bottom (flame)">icicle view</button>
    <button id="reset" type="button" title="Show everything (Esc)">reset zoom</button>
  </div>
  <div id="legend"></div>
  <div id="crumbs"></div>
</header>
<main id="chart"><canvas id="canvas"></canvas></main>
{after}
<div id="tip" hidden></div>
<script type="application/json" id="phprof-data">{data}</script>
<script>
{script}
</script>
</body>
</html>
"""


@register
class FlamegraphPage(Renderer):
    """The interactive flamegraph page of one trace."""

    view, name, suffixes = "flamegraph", "html", (".html",)
    options = {"min_share": 0.001}

    def render(self, view) -> str:
        return flamegraph_html(frame_tree(view.results, view.title), min_share=self.min_share)
