"""Scatter plots as plain geometry for inline SVG: quality against cost or p95 latency.

Only numbers and the configs' names leave this module; the template draws the SVG and
escapes the names. Error bars are the 95% CIs (never an SD); the line joins the configs
on the frontier of this plane (higher quality, lower x); the baseline is a square and
the recommendation a ringed star.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 520, 330
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 52


@dataclass(frozen=True, slots=True)
class PlotPoint:
    """One config in a plot (data units)."""

    label: str
    x: float
    y: float
    x_low: float | None = None
    x_high: float | None = None
    y_low: float | None = None
    y_high: float | None = None
    baseline: bool = False
    recommended: bool = False
    frontier: bool = False


@dataclass(frozen=True, slots=True)
class Mark:
    """One config in SVG coordinates, with its error bars and accessible label."""

    label: str
    aria: str
    cx: float
    cy: float
    x1: float | None
    x2: float | None
    y1: float | None
    y2: float | None
    baseline: bool
    recommended: bool
    frontier: bool
    text_x: float
    text_y: float
    text_anchor: str


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    text: str


@dataclass(slots=True)
class Plot:
    title: str
    x_label: str
    y_label: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    marks: list[Mark] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    frontier_path: str = ""
    empty: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_text(value: float, kind: str, step: float) -> str:
    if kind == "usd":
        if value == 0:
            return "$0"
        decimals = min(10, max(0, 1 - math.floor(math.log10(step))))
        return "$" + f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    if kind == "ms":
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _frontier(points: list[PlotPoint]) -> list[PlotPoint]:
    """Points no other point beats on both axes (quality up, x down), by x."""
    best: list[PlotPoint] = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        if not best or p.y > best[-1].y:
            best.append(p)
    return best


def scatter_plot(
    title: str, points: list[PlotPoint], *, x_label: str, x_kind: str, y_label: str = ""
) -> Plot:
    """Plot geometry: axes from 0 (x) and around the quality CIs (y), ticks, marks."""
    plot = Plot(title=title, x_label=x_label, y_label=y_label or "quality (mean score, 0–1)")
    if not points:
        plot.empty = True
        return plot
    x_max = max(max(p.x, p.x_high or p.x) for p in points)
    x_max = x_max * 1.1 if x_max > 0 else 1.0
    x_ticks = nice_ticks(0.0, x_max)
    x_max = max(x_max, x_ticks[-1])
    y_values = [v for p in points for v in (p.y, p.y_low, p.y_high) if v is not None]
    y_low, y_high = max(0.0, min(y_values) - 0.05), min(1.0, max(y_values) + 0.05)
    if y_high - y_low < 0.1:
        y_low, y_high = max(0.0, y_high - 0.1), max(0.1, y_high)
        y_low = min(y_low, y_high - 0.1)
    y_ticks = [t for t in nice_ticks(y_low, y_high) if y_low - 1e-9 <= t <= y_high + 1e-9]

    def sx(v: float) -> float:
        return round(plot.left + (v / x_max) * (plot.right - plot.left), 1)

    def sy(v: float) -> float:
        frac = (v - y_low) / (y_high - y_low)
        return round(plot.bottom - frac * (plot.bottom - plot.top), 1)

    step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else x_max
    plot.x_ticks = [Tick(sx(t), _tick_text(t, x_kind, step)) for t in x_ticks]
    plot.y_ticks = [Tick(sy(t), f"{t:.2f}") for t in y_ticks]
    middle = (plot.left + plot.right) / 2
    for p in points:
        cx, cy = sx(p.x), sy(p.y)
        right_side = cx < middle
        role = ", ".join(
            r
            for r, on in (
                ("baseline", p.baseline),
                ("recommended", p.recommended),
                ("on the Pareto frontier", p.frontier),
            )
            if on
        )
        aria = f"{p.label}: quality {p.y:.3f}, {x_label} {_value_text(p.x, x_kind)}" + (
            f" ({role})" if role else ""
        )
        plot.marks.append(
            Mark(
                label=p.label,
                aria=aria,
                cx=cx,
                cy=cy,
                x1=sx(p.x_low) if p.x_low is not None else None,
                x2=sx(p.x_high) if p.x_high is not None else None,
                y1=sy(max(p.y_low, y_low)) if p.y_low is not None else None,
                y2=sy(min(p.y_high, y_high)) if p.y_high is not None else None,
                baseline=p.baseline,
                recommended=p.recommended,
                frontier=p.frontier,
                text_x=cx + 9 if right_side else cx - 9,
                text_y=cy - 6,
                text_anchor="start" if right_side else "end",
            )
        )
    plot.marks = _spread_labels(plot.marks)
    plot.frontier_path = " ".join(
        f"{'M' if i == 0 else 'L'}{sx(p.x)},{sy(p.y)}" for i, p in enumerate(_frontier(points))
    )
    return plot


LABEL_HEIGHT = 13.0
CHAR_WIDTH = 6.8


def _spread_labels(marks: list[Mark]) -> list[Mark]:
    """Moves a label down (then up) until it overlaps no label placed before it."""
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline y)
    out = []
    for mark in sorted(marks, key=lambda m: (m.cy, m.cx)):
        width = CHAR_WIDTH * len(mark.label)
        left = mark.text_x if mark.text_anchor == "start" else mark.text_x - width
        y = mark.text_y
        for step in range(12):
            offset = LABEL_HEIGHT * ((step + 1) // 2) * (1 if step % 2 else -1) if step else 0.0
            candidate = mark.text_y + offset
            if not any(
                abs(candidate - py) < LABEL_HEIGHT and left < pr and left + width > pl
                for pl, pr, py in placed
            ):
                y = candidate
                break
        placed.append((left, left + width, y))
        out.append(dataclasses.replace(mark, text_y=round(y, 1)))
    return out


def _value_text(value: float, kind: str) -> str:
    if kind == "usd":
        return f"${value:.3g}"
    if kind == "ms":
        return f"{value:,.0f} ms"
    return f"{value:.3g}"
