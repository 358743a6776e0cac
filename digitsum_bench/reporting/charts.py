"""The page's inline SVG charts: training curves per seed, a table's curves against training time, and
accuracy per true sum. No plotting library: the page stays small and needs nothing."""

from __future__ import annotations

import html
import math
import warnings

import numpy as np
import pandas as pd

from ..schema import N_SUMS

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
W, H, LEFT, RIGHT, TOP, BOTTOM = 420, 190, 40, 10, 10, 30  # chart size and margins, px


def _axes(xmax: float, xticks: list[float], xlabel: str, ylabel: str) -> list[str]:
    """Frame, y grid at 0/25/50/75/100 %, x ticks; returns SVG elements."""
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="frame"/>']
    for pct in (0, 25, 50, 75, 100):
        y = _y(pct)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{pct}</text>')
    for t in xticks:
        out.append(f'<text x="{_x(t, xmax):.1f}" y="{H - BOTTOM + 13}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 3}" text-anchor="middle">{_e(xlabel)}</text>')
    out.append(f'<text x="10" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 10 {(TOP + H - BOTTOM) / 2})">{_e(ylabel)}</text>')
    return out


def _x(value: float, xmax: float) -> float:
    return LEFT + (W - LEFT - RIGHT) * value / max(xmax, 1e-9)


def _y(pct: float) -> float:
    return H - BOTTOM - (H - TOP - BOTTOM) * pct / 100


def curves_svg(runs: pd.DataFrame) -> str:
    """Validation exact accuracy per epoch, one line per seed."""
    series = [(int(r["seed"]), [(h["epoch"], h["val_exact"]) for h in r["history"] if h["val_exact"] is not None])
              for _, r in runs.sort_values("seed").iterrows()]  # fmt: skip
    series = [(seed, points) for seed, points in series if points]
    if not series:
        return '<p class="note">no training history recorded</p>'
    last = max(e for _, points in series for e, _ in points)
    step = max(1, math.ceil(last / 8))
    parts = _axes(last, list(range(0, last + 1, step)), "epoch", "val exact %")
    legend = []
    for i, (seed, points) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        xy = " ".join(f"{_x(e, last):.1f},{_y(v * 100):.1f}" for e, v in points)
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        parts += [f'<circle cx="{_x(e, last):.1f}" cy="{_y(v * 100):.1f}" r="2.2" fill="{color}"/>' for e, v in points]
        legend.append(f'<span style="color:{color}">■</span> seed {seed}')
    return _svg(parts, "validation exact accuracy per epoch") + f'<p class="legend">{" ".join(legend)}</p>'


def table_curves_svg(rows: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Validation exact accuracy of every recipe of a table (seed 0, or its lowest seed) against training time."""
    series = []
    for name in rows["recipe"]:
        mine = runs[runs["recipe"] == name].sort_values("seed")
        if mine.empty:
            continue
        run, elapsed, points = mine.iloc[0], 0.0, []
        for h in run["history"]:
            elapsed += h["seconds"] or 0.0
            if h["val_exact"] is not None:
                points.append((elapsed / 60, h["val_exact"]))
        if points:
            series.append((name, int(run["seed"]), run["device"], points))
    if not series:
        return '<p class="note">no training history recorded</p>'
    last = max(t for *_, points in series for t, _ in points)
    step = _nice_step(last / 6)
    parts = _axes(last, [step * i for i in range(int(last / step) + 1)], "training time (min)", "val exact %")
    legend = []
    for i, (name, seed, device, points) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        xy = " ".join(f"{_x(t, last):.1f},{_y(v * 100):.1f}" for t, v in points)
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{color}" stroke-width="1.6"><title>{_e(name)}'
                     f"</title></polyline>")
        legend.append(f'<span style="color:{color}">■</span> {_e(name)} (seed {seed}, {_e(device)})')
    return _svg(parts, "validation exact accuracy against training time") + f'<p class="legend">{" ".join(legend)}</p>'


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`: tick spacing."""
    power = 10 ** math.floor(math.log10(max(raw, 1e-9)))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def per_sum_svg(runs: pd.DataFrame, split: str) -> str:
    """One bar per true sum 0..36; a sum absent from the split has no bar and a grey mark."""
    found = [p for p in runs[f"{split}_per_sum"] if p is not None]
    if not found:
        return '<p class="note">no per-sum accuracy recorded</p>'
    with warnings.catch_warnings():  # a sum absent from every seed's split averages to NaN, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.vstack(found), axis=0)
    parts = _axes(N_SUMS, [0, 6, 12, 18, 24, 30, 36], "true sum", "exact %")
    width = (W - LEFT - RIGHT) / N_SUMS
    for s, value in enumerate(mean):
        x = LEFT + s * width
        if math.isnan(value):
            parts.append(f'<rect x="{x + 1:.1f}" y="{_y(0) - 2:.1f}" width="{width - 2:.1f}" height="2" class="absent">'
                         f"<title>sum {s}: absent from the split</title></rect>")
            continue
        top = _y(value * 100)
        parts.append(f'<rect x="{x + 1:.1f}" y="{top:.1f}" width="{width - 2:.1f}" height="{_y(0) - top:.1f}" '
                     f'class="bar"><title>sum {s}: {value * 100:.1f}%</title></rect>')
    return _svg(parts, "exact accuracy per true sum")


def _svg(parts: list[str], label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{_e(label)}">' + "".join(parts) + "</svg>")


def _e(value) -> str:
    return html.escape(str(value), quote=True)
