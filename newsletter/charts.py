"""Small server-side SVG charts for the editors' dashboard: no JavaScript, no CDN.

Every function returns a complete, accessible `<svg>` (role="img" with a <title>)
as Markup; labels are escaped. Colours are presentation attributes, not inline
styles, so the page's Content-Security-Policy needs no 'unsafe-inline'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#1a56db", "#0e9f6e", "#e3a008", "#e02424", "#7e3af2", "#6b7280", "#ff5a1f")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _nice_max(value: float) -> int:
    """A round axis maximum at or above `value` (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def _svg(width: int, height: int, title: str, body: list[str], kind: str) -> Markup:
    t = escape(title)
    return Markup(  # noqa: S704 - every interpolated string above is escaped
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{t}">'
        f"<title>{t}</title>" + "".join(body) + "</svg>"
    )


def _short(label: str, limit: int = 30) -> str:
    return label if len(label) <= limit else label[: limit - 1].rstrip() + "…"


def _empty(title: str, width: int, message: str) -> Markup:
    body = [f'<text x="{width // 2}" y="40" text-anchor="middle" {FONT} fill="#666">'
            f"{escape(message)}</text>"]
    return _svg(width, 70, title, body, "empty")


def _legend(names: Sequence[str], colours: Sequence[str], x: int, y: int,
            width: int = 640) -> tuple[list[str], int]:
    """The legend, flowing onto more lines where the chart is narrow; and its height."""
    out = []
    lx, ly = x, y
    for i, name in enumerate(names):
        item_w = 14 + int(len(name) * 6.2) + 14  # swatch, text at 11 px, gap
        if lx > x and lx + item_w > width:
            lx, ly = x, ly + 16
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" '
                   f'fill="{colours[i % len(colours)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}" {FONT} fill="#333">{escape(name)}</text>')
        lx += item_w
    return out, ly - y


def _ticks(top_value: int) -> list[float]:
    """Axis values: whole numbers only (no "0.5 subscribers")."""
    return [0, 0.5, 1] if top_value % 2 == 0 else [0, 1]


def column_chart(
    *, title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]],
    stacked: bool = False, width: int = 640, height: int = 240,
    empty: str = "Nothing to show yet", colours: Sequence[str] = PALETTE,
    max_labels: int = 12,
) -> Markup:
    """Vertical bars per label: side by side per series, or stacked; series take
    `colours` in order (legend included). At most `max_labels` axis labels are written
    (every other one, or every third...), so a phone-sized chart stays legible."""
    names = list(series)
    if not labels:
        return _empty(title, width, empty)
    left, right, top, bottom = 40, 10, 24, 40
    legend, legend_h = _legend(names, colours, left, 12, width)
    top += legend_h
    height += legend_h
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    if stacked:
        peak = max((sum(series[s][i] for s in names) for i in range(len(labels))), default=0)
    else:
        peak = max((v for s in names for v in series[s]), default=0)
    top_value = _nice_max(peak)
    body: list[str] = legend
    for frac in _ticks(top_value):
        y = top + plot_h - frac * plot_h
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                    'stroke="#ddd"/>')
        body.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {FONT} '
                    f'fill="#666">{int(top_value * frac)}</text>')
    group_w = plot_w / n
    label_every = -(-len(labels) // max(max_labels, 1))  # ceiling division
    bar_w = group_w * 0.8 / (1 if stacked else max(len(names), 1))
    for i, label in enumerate(labels):
        gx = left + i * group_w + group_w * 0.1
        base: float = top + plot_h
        for j, name in enumerate(names):
            value = series[name][i]
            h = plot_h * value / top_value
            x = gx if stacked else gx + j * bar_w
            y = base - h
            colour = colours[j % len(colours)]
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)}, {escape(label)}: '
                f"{value}</title></rect>"
            )
            if stacked:
                base = y
        if i % label_every == 0:
            body.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{height - bottom + 14}" '
                        f'text-anchor="middle" {FONT} fill="#444">{escape(label)}</text>')
    return _svg(width, height, title, body, "columns")


def bar_chart(
    *, title: str, labels: Sequence[str], values: Sequence[int], width: int = 640,
    empty: str = "Nothing to show yet",
) -> Markup:
    """Horizontal bars, one per label, with the value at the end."""
    if not labels:
        return _empty(title, width, empty)
    row, left, top = 20, min(190, width * 2 // 5), 8
    height = top * 2 + row * max(len(labels), 1)
    plot_w = width - left - 50
    top_value = _nice_max(max(values, default=0))
    body: list[str] = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        w = plot_w * value / top_value
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" {FONT} '
                    f'fill="#333">{escape(_short(label, left // 7))}</text>')
        body.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                    f'fill="{PALETTE[0]}"><title>{escape(label)}: {value}</title></rect>')
        body.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}" {FONT} '
                    f'fill="#333">{value}</text>')
    return _svg(width, height, title, body, "bars")
