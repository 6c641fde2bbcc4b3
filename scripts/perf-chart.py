#!/usr/bin/env python3
"""Draws the load test's results as an SVG chart: requests per second per configuration (closed
loop), and p99 latency per configuration (closed loop, and open loop when the file has open-loop
runs). Baselines (bare, trace-json, bare-again) are grey, audited configurations blue.

    cargo run --release -p audit-examples --example loadtest -- --json results.json
    python3 scripts/perf-chart.py results.json perf.svg

Standard library only. Missing keys and null values are skipped, not errors.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

WIDTH = 900
MARGIN = 24
LABEL_W = 190  # configuration names, left of the bars
VALUE_PAD = 6
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

# (closed loop / only series, open loop)
AUDITED = ("#2b6cb0", "#90b4dc")
BASELINE = ("#6b6b6b", "#b8b8b8")
TEXT = "#222222"
MUTED = "#666666"
GRID = "#e4e4e4"


def is_audited(config):
    return config.startswith("audited")


def colours(config):
    return AUDITED if is_audited(config) else BASELINE


def number(v):
    """A finite float from v, or None (null, missing, a string, NaN)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) and v >= 0 else None


def fmt(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}".rstrip("0").rstrip(".")


def text_width(s, size):
    """Rough width of s in px: enough to decide inside or outside a bar."""
    return len(s) * size * 0.56


def nice_max(v):
    """A round axis end at or above v, and its tick step (about six ticks)."""
    if v <= 0:
        return 1.0, 0.25
    raw = v / 6
    exp = 10 ** math.floor(math.log10(raw))
    step = next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= raw)
    return math.ceil(v / step - 1e-9) * step, step


def load(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object at the top level")
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    runs = data.get("runs") if isinstance(data.get("runs"), list) else []
    order, closed, open_ = [], {}, {}
    rates = set()
    for r in runs:
        if not isinstance(r, dict) or not isinstance(r.get("config"), str):
            continue
        name = r["config"]
        loop = r.get("loop") if r.get("loop") in ("closed", "open") else "closed"
        if loop == "open":
            rate = number(r.get("rate"))
            if rate is not None:
                rates.add(rate)
        target = closed if loop == "closed" else open_
        entry = {"rps": number(r.get("rps")), "p99": number(r.get("p99_us"))}
        if entry["rps"] is None and entry["p99"] is None:
            continue  # e.g. a raw-store line: nothing this chart shows
        if name in target:
            print(f"perf-chart: {name} ({loop} loop) appears twice; the last one is drawn",
                  file=sys.stderr)
        target[name] = entry
        if name not in order:
            order.append(name)
    return machine, order, closed, open_, rates


class Svg:
    def __init__(self):
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, fill=TEXT, anchor="start", weight="normal"):
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
                 f'text-anchor="{anchor}" font-weight="{weight}">{escape(s)}</text>')

    def rect(self, x, y, w, h, fill, title=None):
        inner = f"<title>{escape(title)}</title>" if title else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
                 f'fill="{fill}">{inner}</rect>')

    def line(self, x1, y1, x2, y2, stroke=GRID, width=1):
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{stroke}" stroke-width="{width}"/>')


def bar(svg, x0, y, w, h, value_label, fill, title, light=False):
    """A bar with its value written at its end: inside when it fits, else just outside."""
    svg.rect(x0, y, w, h, fill, title)
    size = 11 if h < 16 else 12
    ty = y + h / 2 + size * 0.36
    if text_width(value_label, size) + 2 * VALUE_PAD < w:
        svg.text(x0 + w - VALUE_PAD, ty, value_label, size, TEXT if light else "#ffffff", "end")
    else:
        svg.text(x0 + w + VALUE_PAD, ty, value_label, size, TEXT)


def axis(svg, x0, plot_w, top, step, y_top, y_bottom, unit):
    """Vertical grid lines with tick values below the panel."""
    n = int(round(top / step))
    for i in range(n + 1):
        v = step * i
        x = x0 + plot_w * v / top
        svg.line(x, y_top, x, y_bottom)
        svg.text(x, y_bottom + 14, fmt(v), 10, MUTED, "middle")
    svg.text(x0 + plot_w, y_bottom + 28, unit, 10, MUTED, "end")


def panel_rps(svg, y, order, closed):
    names = [n for n in order if n in closed and closed[n]["rps"] is not None]
    svg.text(MARGIN, y + 16, "Requests per second, closed loop (higher is better)", 15, TEXT,
             weight="600")
    y += 30
    if not names:
        svg.text(MARGIN, y + 16, "no closed-loop runs with a requests-per-second value", 12, MUTED)
        return y + 40
    x0 = MARGIN + LABEL_W
    plot_w = WIDTH - MARGIN - x0 - 110  # room for a value written past the longest bar
    top, step = nice_max(max(closed[n]["rps"] for n in names))
    bar_h, gap = 22, 10
    y_bottom = y + len(names) * (bar_h + gap)
    axis(svg, x0, plot_w, top, step, y, y_bottom, "requests / s")
    bare = closed.get("bare", {}).get("rps")
    for i, n in enumerate(names):
        v = closed[n]["rps"]
        by = y + gap / 2 + i * (bar_h + gap)
        svg.text(x0 - 10, by + bar_h / 2 + 4.5, n, 12, TEXT, "end")
        label = fmt(v)
        if bare and n != "bare":
            label += f"  ({v / bare:.2f}\u00d7 bare)"
        bar(svg, x0, by, plot_w * v / top, bar_h, label, colours(n)[0], f"{n}: {fmt(v)} req/s")
    svg.line(x0, y, x0, y_bottom, "#999999")
    return y_bottom + 40


def panel_p99(svg, y, order, closed, open_, rates):
    has_open = any(open_.get(n, {}).get("p99") is not None for n in order)
    names = [n for n in order
             if closed.get(n, {}).get("p99") is not None or open_.get(n, {}).get("p99") is not None]
    svg.text(MARGIN, y + 16, "p99 latency in \u00b5s (lower is better)", 15, TEXT, weight="600")
    y += 26
    if has_open:
        open_name = "open loop"
        if len(rates) == 1:
            open_name += f", {fmt(next(iter(rates)))} req/s"
        lx = MARGIN
        for name, shade in (("closed loop", 0), (open_name, 1)):
            svg.rect(lx, y + 2, 10, 10, BASELINE[shade])
            svg.rect(lx + 12, y + 2, 10, 10, AUDITED[shade])
            svg.text(lx + 28, y + 11, name, 12, TEXT)
            lx += 28 + text_width(name, 12) + 28
        svg.text(WIDTH - MARGIN, y + 11, "grey: baselines \u00b7 blue: audited", 11, MUTED, "end")
        y += 20
    if not names:
        svg.text(MARGIN, y + 20, "no runs with a p99 value", 12, MUTED)
        return y + 44
    y += 6
    x0 = MARGIN + LABEL_W
    plot_w = WIDTH - MARGIN - x0 - 70
    values = [e["p99"] for src in (closed, open_) for n, e in src.items()
              if n in names and e["p99"] is not None]
    top, step = nice_max(max(values))
    series = [("closed", closed, 0)] + ([("open", open_, 1)] if has_open else [])
    bar_h = 22 if len(series) == 1 else 15
    inner = 2
    group_h = len(series) * bar_h + (len(series) - 1) * inner
    gap = 12
    y_bottom = y + len(names) * (group_h + gap)
    axis(svg, x0, plot_w, top, step, y, y_bottom, "\u00b5s")
    for i, n in enumerate(names):
        gy = y + gap / 2 + i * (group_h + gap)
        svg.text(x0 - 10, gy + group_h / 2 + 4.5, n, 12, TEXT, "end")
        for j, (loop, src, shade) in enumerate(series):
            v = src.get(n, {}).get("p99")
            by = gy + j * (bar_h + inner)
            if v is None:
                why = f"no p99 in the {loop}-loop run" if n in src else f"no {loop}-loop run"
                svg.text(x0 + VALUE_PAD, by + bar_h / 2 + 4, why, 10, MUTED)
                continue
            bar(svg, x0, by, plot_w * v / top, bar_h, fmt(v), colours(n)[shade],
                f"{n}, {loop} loop: p99 {fmt(v)} \u00b5s", light=shade == 1)
    svg.line(x0, y, x0, y_bottom, "#999999")
    return y_bottom + 40


def render(machine, order, closed, open_, rates):
    svg = Svg()
    cpus = number(machine.get("cpus"))
    title = "Audit overhead load test"
    title += f" \u2014 {fmt(cpus)} CPU{'s' if cpus != 1 else ''}" if cpus is not None else ""
    svg.text(MARGIN, 32, title, 20, TEXT, weight="700")
    y = 40
    sub = []
    if isinstance(machine.get("pinned"), bool):
        sub.append("server and load generator pinned to separate CPUs" if machine["pinned"]
                   else "server and load generator share the CPUs")
    note = machine.get("note")
    if isinstance(note, str) and note.strip():
        sub.append(note.strip())
    if sub:
        svg.text(MARGIN, 58, "; ".join(sub)[:140], 12, MUTED)
        y = 62
    y = panel_rps(svg, y + 16, order, closed)
    y = panel_p99(svg, y, order, closed, open_, rates)
    height = int(y)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="{escape(FONT, {chr(34): "&quot;"})}">'
            f'<rect width="100%" height="100%" fill="#ffffff"/>')
    return "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', head] + svg.parts + ["</svg>", ""])


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        print("\nusage: python3 scripts/perf-chart.py results.json perf.svg", file=sys.stderr)
        return 2
    try:
        machine, order, closed, open_, rates = load(argv[1])
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        print(f"perf-chart: {argv[1]}: {e}", file=sys.stderr)
        return 1
    out = render(machine, order, closed, open_, rates)
    try:
        with open(argv[2], "w", encoding="utf-8") as f:
            f.write(out)
    except OSError as e:
        print(f"perf-chart: {argv[2]}: {e}", file=sys.stderr)
        return 1
    plural = "" if len(order) == 1 else "s"
    print(f"perf-chart: wrote {argv[2]} ({len(order)} configuration{plural}"
          f"{', open loop too' if open_ else ''})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
