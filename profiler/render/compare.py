"""A comparison of runs (``phprof.attribution.compare``) as text, markdown, JSON
or one HTML page (the tables around the differential flamegraph of the first
two runs). Renders only: every figure comes from the comparison.
"""
from __future__ import annotations

import json
from html import escape

from .base import Renderer, register
from .flamegraph import diff_flamegraph_html
from .frames import frame_tree
from .units import aligned, joules, markdown_table

def _j(x: float | None, signed: bool = False) -> str:
    return joules(x, signed)


def _range(lo, hi, bound: bool = False, signed: bool = False) -> str:
    if lo is None or hi is None:
        return ""
    return f" [{_j(lo, signed)}, {_j(hi, signed)}]" + ("†" if bound else "")


def _fig(f) -> str:
    if f is None:
        return "-"
    return _j(f.joules) + _range(f.low_j, f.high_j, f.bound)


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def _delta_text(d, with_range: bool = True) -> str:
    if d is None:
        return "-"
    rel = "" if d.relative is None else f" ({d.relative:+.0%})"
    return _j(d.joules, True) + rel + (_range(d.low_j, d.high_j, signed=True) if with_range else "")


def _per_param(x: float | None) -> str:
    """J per parameter (per inference): small numbers, down to pJ."""
    if x is None:
        return "-"
    for factor, unit in ((1, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x / 1e-12:.3g} pJ"


def _count(x: int | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.3g} M" if x >= 1e5 else f"{x:,}"


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _letter(i: int) -> str:
    return LETTERS[i] if i < len(LETTERS) else f"R{i + 1}"


def key_line(c) -> str:
    """Which letter is which run: "A = gpt2 (text-generation), B = ..."."""
    return ", ".join(f"{_letter(i)} = {r.name} ({r.task or 'no task'})" for i, r in enumerate(c.runs))


def headline(c) -> list[str]:
    """One sentence per run against the first: the total, per token, and where most
    of the difference is."""
    a = c.runs[0]
    out = []
    for i, r in enumerate(c.runs[1:], 1):
        d = c.total.deltas[i]
        if d is None or d.joules == 0:
            how = "the same energy per inference as"
        else:
            rel = "" if d.relative is None else f" ({abs(d.relative):.0%})"
            how = f"{_j(abs(d.joules))}{rel} {'more' if d.joules > 0 else 'less'} energy per inference than"
        text = f"{r.name} uses {how} {a.name} ({_j(r.energy.joules)} against {_j(a.energy.joules)}"
        if d is not None and _delta_class(d) == "unsure":
            text += f"; the difference's range{_range(d.low_j, d.high_j, signed=True)} includes 0"
        text += ")"
        if r.per_token is not None and a.per_token is not None:
            text += f"; per generated token {_j(r.per_token.joules)} against {_j(a.per_token.joules)}"
        big = sorted((row for row in c.components if row.deltas[i] is not None and row.deltas[i].joules),
                     key=lambda row: -abs(row.deltas[i].joules))[:3]
        if big:
            text += ". Largest differences: " + ", ".join(f"{row.key} {_j(row.deltas[i].joules, True)}" for row in big)
        out.append(text + ".")
    return out


def tables(c) -> list[tuple[str, list[str], list[list[str]]]]:
    """The comparison as (title, header, rows) tables of strings: what the text,
    markdown and HTML renderers lay out. Runs are columns named by letter
    (:func:`key_line`); the first column of a total row is "**total**"."""
    return [(title, head, [[_text(x) for x in r] for r in rows]) for title, head, rows in _tables(c)]


def _text(x) -> str:
    return x if isinstance(x, str) else x[0]


def _dcell(d, with_range: bool = True) -> tuple[str, str]:
    """A Δ cell: its text and its colour class (:func:`_delta_class`; none where the
    cell shows no range)."""
    return _delta_text(d, with_range), (_delta_class(d) if with_range else "")


def _tables(c) -> list[tuple[str, list[str], list[list]]]:
    """:func:`tables` with each energy Δ cell as (text, colour class)."""
    n = len(c.runs)
    L = [_letter(i) for i in range(n)]
    others = list(range(1, n))
    dname = [f"Δ {L[i]} - A" for i in others]
    blank = [""] * len(others)
    out = []

    head = [""] + [f"{L[i]}: {r.name}" for i, r in enumerate(c.runs)] + dname
    rows = [
        ["task"] + [r.task or "-" for r in c.runs] + blank,
        ["device"] + [r.device or "-" for r in c.runs] + blank,
        ["inferences"] + [f"{r.inferences:,}" for r in c.runs] + blank,
        ["energy / inference"] + [_fig(r.energy) for r in c.runs] + [_dcell(c.total.deltas[i]) for i in others],
        *([["  by device (each its own sensor)"] + [", ".join(f"{k} {_fig(e)}" for k, e in r.devices.items()) or "-"
                                                    for r in c.runs] + blank]
          if any(r.devices for r in c.runs) else []),
        ["static (idle) / inference"] + [_j(r.static_j) for r in c.runs] + blank,
        ["time / inference"] + [_secs(r.seconds) for r in c.runs] + blank,
        ["tokens / inference"] + [_num(r.tokens_per_inference) for r in c.runs] + blank,
        ["energy / token"] + [_fig(r.per_token) for r in c.runs] +
        [_j(c.total.deltas[i].per_token, True) if c.total.deltas[i] else "-" for i in others],
        ["parameters"] + [_count(r.parameters) for r in c.runs] + blank,
        ["energy / parameter"] + [_per_param(r.per_parameter) for r in c.runs] + blank,
        ["attribution"] + [(r.method.text() if r.method else "-").split(" (")[0] for r in c.runs] + blank,
    ]
    out.append(("Runs, per inference", head, rows))

    def component_rows(rows_in, total=True):
        rows = []
        for r in list(rows_in) + ([c.total] if total else []):
            rows.append(["**total**" if r is c.total else r.key] + [_fig(x.energy) if x else "-" for x in r.cells] +
                        [_dcell(r.deltas[i]) for i in others] + [_pct(x.share) if x else "-" for x in r.cells])
        return rows

    head = ["component"] + L + dname + [f"share {x}" for x in L]
    out.append(("Energy by component, J per inference", head, component_rows(c.components)))
    if len(c.by_component) < len(c.components):
        out.append(("By component, stacks summed, J per inference", head,
                    component_rows(c.by_component, total=False)))

    head = (["component"] + [f"{x} / token" for x in L] + [f"{d} / token" for d in dname] +
            [f"{x} / parameter (parameters)" for x in L])
    rows = []
    for r in list(c.components) + [c.total]:
        rows.append(["**total**" if r is c.total else r.key] +
                    [_j(x.per_token) if x else "-" for x in r.cells] +
                    [_j(r.deltas[i].per_token, True) if r.deltas[i] else "-" for i in others] +
                    [f"{_per_param(x.per_parameter)} ({_count(x.parameters)})" if x else "-" for x in r.cells])
    out.append(("Per generated token and per parameter, J", head, rows))

    if c.phases:
        head = (["phase"] + L + [f"{x} steps x J / step" for x in L] + dname + [f"{d} / step" for d in dname])
        rows = []
        for r in c.phases:
            rows.append([r.key] + [_fig(x.energy) if x else "-" for x in r.cells] +
                        [(f"{_num(x.steps)} x {_j(x.per_step.joules)}" if x and x.per_step else "-")
                         for x in r.cells] +
                        [_dcell(r.deltas[i], with_range=False) for i in others] +
                        [_j(r.deltas[i].per_step, True) if r.deltas[i] and r.deltas[i].per_step is not None else "-"
                         for i in others])
        out.append(("Phases, J per inference and per step", head, rows))
    return out


def _secs(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


@register
class TextComparison(Renderer):
    """Aligned tables for a terminal; ``warnings=False`` leaves the warnings out
    (the command prints them on stderr)."""

    view, name, suffixes = "comparison", "text", (".txt",)
    options = {"warnings": True}

    def render(self, c) -> str:
        out = headline(c) + [key_line(c)]
        for w in c.warnings if self.warnings else ():
            out.append(f"warning: {w}")
        for title, head, rows in tables(c):
            out += ["", f"{title}:"] if out else [f"{title}:"]
            out += aligned(head, [[x.replace("**", "") for x in r] for r in rows])
        out.append("")
        out += [f"note: {n}" for n in c.notes]
        return "\n".join(out) + "\n"


@register
class MarkdownComparison(Renderer):
    """Markdown that reads well pasted into a GitHub issue."""

    view, name, suffixes = "comparison", "markdown", (".md",)

    def render(self, c) -> str:
        def cell(x: str) -> str:
            return x.replace("|", "\\|")

        out = [f"**{h}**" for h in headline(c)] + ["", key_line(c), ""]
        if c.warnings:
            out += [f"> **warning:** {cell(w)}" for w in c.warnings] + [""]
        for title, head, rows in tables(c):
            out += [f"**{title}**", ""] + markdown_table(head, rows) + [""]
        out += [f"- {n}" for n in c.notes]
        return "\n".join(out) + "\n"


@register
class JsonComparison(Renderer):
    """The whole comparison (``Comparison.from_dict`` reads it back)."""

    view, name, suffixes = "comparison", "json", (".json",)

    def render(self, c) -> str:
        return json.dumps(c.to_dict(), indent=1, allow_nan=False) + "\n"


@register
class ComparisonPage(Renderer):
    """The comparison page: the headline and tables, the differential flamegraph of
    the first two runs, the phases, the notes. One self-contained file."""

    view, name, suffixes = "comparison", "html", (".html",)
    options = {"min_share": 0.001}

    def render(self, c) -> str:
        def td(x) -> str:
            text, cls = (x, "") if isinstance(x, str) else x
            attr = f' class="{cls}"' if cls else ""
            return f"<td{attr}>{escape(text)}</td>"

        def table(title, head, rows):
            h = "".join(f"<th>{escape(x)}</th>" for x in head)
            body = []
            for r in rows:
                total = r[0].startswith("**")
                cells = [f"<th>{escape(r[0].strip('*'))}</th>"] + [td(x) for x in r[1:]]
                body.append(f"<tr{' class=total' if total else ''}>{''.join(cells)}</tr>")
            return (f'<h2>{escape(title)}</h2><table class="cmp"><thead><tr>{h}</tr></thead>'
                    f'<tbody>{"".join(body)}</tbody></table>')

        if len(c.results) < 2:
            raise ValueError("the comparison page draws the first two runs' frames: make the comparison with "
                             "phprof.compare, which keeps their results")
        parts = _tables(c)
        # the first two tables above the flamegraph; under it, the phases first
        rest = sorted(parts[2:], key=lambda t: not t[0].startswith("Phases"))
        first = [table(*t) for t in parts[:2]]
        rest = [table(*t) for t in rest]
        warn = "".join(f"<li>{escape(w)}</li>" for w in c.warnings)
        notes = "".join(f"<li>{escape(n)}</li>" for n in c.notes)
        names = [r.name for r in c.runs]
        more = "" if len(names) == 2 else (f"<p class='explain'>The flamegraph compares B ({escape(names[1])}) with "
                                           f"A ({escape(names[0])}); compare the other runs in pairs for theirs.</p>")
        heads = "".join(f"<p class='headline'>{escape(h)}</p>" for h in headline(c))
        before = f"""
<section class="panel">
  <h1>{escape(' vs '.join(names))} <span class="tool">comparison · phprof</span></h1>
  {heads}
  <p class="explain">{escape(key_line(c))}. Δ with a range: red where a run spends more than A, blue where less,
  when the range excludes 0, grey when it includes 0; a Δ shown without a range is not coloured. † a conservative
  bound (a sum of layers' bounds), not an interval (see the notes).</p>
  {f'<ul class="warnings">{warn}</ul>' if warn else ''}
  {''.join(first)}
</section>{more}"""
        after = f"""
<section class="panel">
  {''.join(rest)}
  <h2>Notes</h2><ul class="notes">{notes}</ul>
</section>"""
        trees = [frame_tree(r) for r in c.results[:2]]
        return diff_flamegraph_html(*trees, names[:2], title=f"B: {names[1]} against A: {names[0]}",
                                    min_share=self.min_share, before=before, after=after)


def _delta_class(d) -> str:
    """The colour of a difference by its range: "more" (B > A) or "less" where the
    range excludes 0, "unsure" where it includes 0, "" where it has no range."""
    if d is None or d.low_j is None or d.high_j is None:
        return ""
    if d.low_j > 0:
        return "more"
    if d.high_j < 0:
        return "less"
    return "unsure"
