"""The report as one HTML page: the summary, the flamegraph, power over time,
and each layer's energy share against its time share.

Everything inline (the flamegraph page of ``html`` with these sections added),
so the file opens anywhere with no network.
"""
from __future__ import annotations

from html import escape

from ..attribution.components import KIND_OF
from ..attribution.estimate import IDLE, WLS
from ..attribution.timeline import NO_KERNEL, OUTSIDE
from ..report import summary_lines
from .html import flamegraph_html
from .plots import KIND_COLOURS, power_plot, share_bars


def report_page(summary: dict, tables: dict, roll: dict, tree: dict, excerpt: dict, top: int = 25) -> str:
    rows = "".join(f"<tr><th>{escape(k.strip())}</th><td>{escape(v)}</td></tr>"
                   for k, v in summary_lines(summary, roll))
    notes = "".join(f"<li>{escape(n)}</li>" for n in summary["notes"])
    bars = _layer_shares(summary, tables, top)
    legend = "".join(f'<span class="key"><i style="background:{c}"></i>{k}</span>'
                     for k, c in KIND_COLOURS.items() if k not in ("kernel",))
    before = f"""
<style>
section.report {{ font: 14px/1.45 system-ui, sans-serif; margin: 12px 16px; color: #1f2933; }}
section.report h2 {{ font-size: 16px; margin: 18px 0 6px; }}
table.summary {{ border-collapse: collapse; }}
table.summary th {{ text-align: left; font-weight: 600; padding: 2px 14px 2px 0; vertical-align: top;
  white-space: nowrap; }}
table.summary td {{ padding: 2px 0; }}
.explain {{ color: #52606d; margin: 4px 0 8px; max-width: 70em; }}
svg.plot text.tick {{ font: 11px system-ui, sans-serif; fill: #52606d; }}
svg.plot text.label {{ font: 12px ui-monospace, monospace; fill: #1f2933; }}
.legend .key {{ margin-right: 14px; font-size: 12px; }}
.legend .key i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
ul.notes {{ color: #52606d; }}
</style>
<section class="report">
  <h2>Summary</h2>
  <table class="summary">{rows}</table>
</section>"""
    after = f"""
<section class="report">
  <h2>Power over {excerpt['seconds'] * 1e3:.0f} ms of the run</h2>
  <p class="explain">Red: what the sensor reported ({summary['sensor_updates']} updates over the run), each value
  held until the next; yellow: the window each value averaged, as placed by the sensor model; blue: the power the
  estimate implies (every layer at its fitted power); shaded: inferences; strip: what ran.</p>
  {power_plot(excerpt)}
  <div class="legend">{legend}</div>
  <h2>Energy share against time share (top {len(bars)} layers)</h2>
  <p class="explain">Solid bar: the layer's share of the inferences' energy (estimated; * marks a layer the sensor
  could not resolve alone, split by time within its group); outline: its share of their time (measured). A layer
  whose bars differ draws more or less than the average power.</p>
  {share_bars(bars)}
  <h2>Notes</h2>
  <ul class="notes">{notes}</ul>
</section>"""
    return flamegraph_html(tree, before=before, after=after)


def _layer_shares(summary: dict, tables: dict, top: int) -> list[tuple[str, str, float, float]]:
    """The layers with the most energy (module scopes only), with their energy and time shares."""
    layers = tables["layers"]
    total = summary["inferences_energy"]["joules"] or 1.0
    time = sum(float(s) for s, lab in zip(layers["seconds"], layers["label"]) if lab != IDLE) or 1.0
    rows = [(str(lab) + ("" if str(m) == WLS else " *"), KIND_OF[str(c)], float(e) / total, float(s) / time)
            for lab, c, e, s, m in zip(layers["label"], layers["component"], layers["energy_j"], layers["seconds"],
                                       layers["method"])
            if str(lab) not in (IDLE, OUTSIDE, NO_KERNEL)]
    return sorted(rows, key=lambda r: -r[2])[:top]
