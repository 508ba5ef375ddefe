"""Static SVG plots for the report page: power over time, and energy against time share.

Plain SVG strings (no script): they render in any browser and survive printing.
"""
from __future__ import annotations

from html import escape

from .palette import colour, kind_of


def power_plot(excerpt, width: int = 960, height: int = 300) -> str:
    """The sensor's updates (dots, held as steps) and the window each averaged (shaded),
    the power the estimate implies (line), inferences (bands) and what ran (a strip
    coloured by component kind), over a short stretch of the run
    (``excerpt``: a ``phprof.attribution.excerpt.PowerExcerpt``)."""
    pad_l, pad_r, pad_t, strip = 52, 30, 14, 16
    plot_h = height - pad_t - 34 - strip
    seconds = excerpt.seconds
    values = [w for _, w in excerpt.updates] + [w for _, w in excerpt.model_w]
    top = max(values + [1.0]) * 1.08

    def x(t: float) -> float:
        return pad_l + (width - pad_l - pad_r) * t / seconds

    def y(w: float) -> float:
        return pad_t + plot_h * (1 - w / top)

    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="power over time">']
    for s, e in excerpt.inferences:
        parts.append(f'<rect x="{x(s):.1f}" y="{pad_t}" width="{max(x(e) - x(s), 0.5):.1f}" height="{plot_h}" '
                     'fill="#eef3f8"><title>inference</title></rect>')
    for a, b in excerpt.windows:
        parts.append(f'<rect x="{x(max(a, 0)):.1f}" y="{pad_t}" width="{max(x(b) - x(max(a, 0)), 0.5):.1f}" '
                     f'height="{plot_h}" fill="#f6c85f" opacity="0.35"><title>sensor window</title></rect>')
    if excerpt.model_w:
        pts = " ".join(f"{x(t):.1f},{y(w):.1f}" for t, w in excerpt.model_w)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#2e86ab" stroke-width="1">'
                     '<title>power implied by the estimate (each layer at its fitted power)</title></polyline>')
    ups = excerpt.updates
    for (t, w), nxt in zip(ups, ups[1:] + [(seconds, None)]):
        parts.append(f'<line x1="{x(t):.1f}" y1="{y(w):.1f}" x2="{x(min(nxt[0], seconds)):.1f}" y2="{y(w):.1f}" '
                     'stroke="#d1495b" stroke-width="1.5"/>')
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(w):.1f}" r="3" fill="#d1495b">'
                     f'<title>sensor update: {w:.1f} W at {t * 1e3:.1f} ms</title></circle>')
    strip_y = pad_t + plot_h + 4
    for s, e, component in excerpt.activity:
        parts.append(f'<rect x="{x(s):.2f}" y="{strip_y}" width="{max(x(e) - x(s), 0.3):.2f}" height="{strip}" '
                     f'fill="{colour(kind_of(component))}"/>')
    for k in range(5):  # axes
        w = top * k / 4
        parts.append(f'<text x="{pad_l - 6}" y="{y(w) + 4:.1f}" text-anchor="end" class="tick">{w:.0f} W</text>')
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y(w):.1f}" y2="{y(w):.1f}" stroke="#e5e7eb"/>')
    for k in range(7):
        t = seconds * k / 6
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle" class="tick">'
                     f'{t * 1e3:.0f} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def share_bars(rows: list[tuple[str, str, float, float]], width: int = 960, bar_h: int = 16) -> str:
    """Per layer: its share of the energy (solid) against its share of the time
    (outline): ``rows`` = (label, kind, energy share, time share)."""
    label_w, pad_r = 330, 110
    height = bar_h * 2 * len(rows) + 30
    top = max([max(e, t) for _, _, e, t in rows] + [1e-9])

    def w(share: float) -> float:
        return (width - label_w - pad_r) * share / top

    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="energy share against time share per layer">']
    for i, (label, kind, e, t) in enumerate(rows):
        y0 = 10 + i * bar_h * 2
        fill = colour(kind)
        parts.append(f'<text x="{label_w - 8}" y="{y0 + bar_h * 0.8:.1f}" text-anchor="end" class="label">'
                     f'{escape(label[-48:])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y0}" width="{w(e):.1f}" height="{bar_h * 0.8:.1f}" fill="{fill}">'
                     f'<title>{escape(label)}: {e:.1%} of the energy</title></rect>')
        parts.append(f'<rect x="{label_w}" y="{y0 + bar_h * 0.85:.1f}" width="{w(t):.1f}" height="{bar_h * 0.5:.1f}" '
                     f'fill="none" stroke="#374151"><title>{escape(label)}: {t:.1%} of the time</title></rect>')
        parts.append(f'<text x="{label_w + max(w(e), w(t)) + 6:.1f}" y="{y0 + bar_h * 0.8:.1f}" class="tick">'
                     f'{e:.1%} / {t:.1%}</text>')
    parts.append("</svg>")
    return "".join(parts)
