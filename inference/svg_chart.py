"""Small inline SVG charts for the report, written directly: axes with round ticks, bars, lines, a legend.

The report's six charts need nothing more, and writing the SVG is about 20x cheaper than drawing it with
matplotlib (whose import and constrained layout cost ``churn score`` about 0.8 s of CPU on a small base).
Output is deterministic text: no ids, no metadata, no XML header, no namespace URLs (an HTML5 parser puts
inline ``<svg>`` in the SVG namespace); ``class="chart"`` lets the page's CSS scale it. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

PT = 72.0  # user units per inch, as in matplotlib's SVG output
AXIS, TICK_TEXT, GRID = "#9aa5b1", "#3e4c59", "#e4e7eb"
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")
_FONT = "font-family:'DejaVu Sans',Verdana,sans-serif"


def _esc(text: object) -> str:
    return str(Markup.escape(str(text)))


def _n(v: float) -> str:
    """A coordinate with two decimals at most (short, stable text)."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def text_width(text: str, size: float) -> float:
    """Approximate rendered width of ``text`` at font ``size`` (average glyph of a sans-serif font)."""
    return 0.62 * size * len(text)


def nice_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi], at most ``max_ticks`` + 1."""
    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return [lo]
    mag = 10.0 ** math.floor(math.log10(span / max_ticks))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if span / (m * mag) <= max_ticks)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def number_format(ticks: Sequence[float]) -> Callable[[float], str]:
    """Plain numbers with the decimals the tick step needs (0, 0.5, 1 / 0, 20, 40)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(
        math.log10(step) + 1e-9), 6) == 2.5 else 0)
    return lambda v: f"{v:.{decimals}f}"


def percent(v: float) -> str:
    """A 0-1 value as a whole percentage (the report's probability axes)."""
    return f"{100 * v:.0f}%"


@dataclass
class LegendEntry:
    label: str
    colour: str
    kind: str = "box"  # box (bars), line, dashed, marker (a line with circles)


@dataclass
class Chart:
    """One set of axes: limits, ticks and labels; add bars and lines, then :meth:`svg`."""

    width: float  # inches
    height: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    xlabel: str = ""
    ylabel: str = ""
    xticks: Sequence[float] = ()
    yticks: Sequence[float] = ()
    xtick_labels: Sequence[str] = ()
    ytick_labels: Sequence[str] = ()
    body: list[str] = field(default_factory=list)
    legend_svg: str = ""

    def __post_init__(self) -> None:
        self.w, self.h = self.width * PT, self.height * PT
        widest = max((text_width(t, 9) for t in self.ytick_labels), default=0.0)
        self.left = 8 + (15 if self.ylabel else 0) + widest + 7
        self.right, self.top = 12.0, 8.0
        self.bottom = 8 + 16 + (14 if self.xlabel else 0)

    def x(self, v: float) -> float:
        x0, x1 = self.xlim
        return self.left + (v - x0) / (x1 - x0) * (self.w - self.left - self.right)

    def y(self, v: float) -> float:
        y0, y1 = self.ylim
        return self.h - self.bottom - (v - y0) / (y1 - y0) * (self.h - self.bottom - self.top)

    def bar(self, x0: float, x1: float, y0: float, y1: float, colour: str, edge: str | None = None) -> None:
        """A filled rectangle between data coordinates (x0, y0) and (x1, y1)."""
        left, right = sorted((self.x(x0), self.x(x1)))
        top, bottom = sorted((self.y(y1), self.y(y0)))
        stroke = f' stroke="{edge}" stroke-width="0.6"' if edge else ""
        self.body.append(f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}" '
                         f'height="{_n(bottom - top)}" fill="{colour}"{stroke}/>')

    def line(self, xs: Sequence[float], ys: Sequence[float], colour: str, width: float = 1.5,
             dashed: bool = False, markers: bool = False) -> None:
        """A polyline through the points, optionally dashed, optionally with a circle at each point."""
        pts = " ".join(f"{_n(self.x(a))},{_n(self.y(b))}" for a, b in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="3.7,1.6"' if dashed else ""
        self.body.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="{_n(width)}"'
                         f'{dash} stroke-linejoin="round"/>')
        if markers:
            self.body += [f'<circle cx="{_n(self.x(a))}" cy="{_n(self.y(b))}" r="3" fill="{colour}"/>'
                          for a, b in zip(xs, ys, strict=True)]

    def legend(self, entries: Sequence[LegendEntry], loc: str = "upper right", title: str = "",
               size: float = 8, ncol: int = 1) -> None:
        """A frameless legend in a corner of the axes (``loc``: upper/lower + left/right)."""
        rows = math.ceil(len(entries) / ncol)
        col_w = 28 + max(text_width(e.label, size) for e in entries)
        box_w = max(col_w * ncol, text_width(title, size))
        box_h = rows * (size + 4) + (size + 4 if title else 0)
        x0 = self.left + 8 if loc.endswith("left") else self.w - self.right - 8 - box_w
        y0 = self.top + 6 if loc.startswith("upper") else self.h - self.bottom - 6 - box_h
        out = [f'<text x="{_n(x0 + box_w / 2)}" y="{_n(y0 + size)}" text-anchor="middle" font-size="{_n(size)}">'
               f'{_esc(title)}</text>'] if title else []
        for i, e in enumerate(entries):
            cx = x0 + (i // rows) * col_w
            cy = y0 + (i % rows + (1 if title else 0)) * (size + 4) + size / 2 + 2
            out.append(self._swatch(e, cx, cy))
            out.append(f'<text x="{_n(cx + 20)}" y="{_n(cy + size / 2 - 1)}" font-size="{_n(size)}">'
                       f'{_esc(e.label)}</text>')
        self.legend_svg = "".join(out)

    @staticmethod
    def _swatch(e: LegendEntry, x: float, y: float) -> str:
        if e.kind == "box":
            return f'<rect x="{_n(x)}" y="{_n(y - 3.5)}" width="14" height="7" fill="{e.colour}"/>'
        dash = ' stroke-dasharray="3.7,1.6"' if e.kind == "dashed" else ""
        mark = f'<circle cx="{_n(x + 7)}" cy="{_n(y)}" r="3" fill="{e.colour}"/>' if e.kind == "marker" else ""
        return f'<line x1="{_n(x)}" y1="{_n(y)}" x2="{_n(x + 14)}" y2="{_n(y)}" stroke="{e.colour}" ' \
               f'stroke-width="1.5"{dash}/>{mark}'

    def _axes(self) -> list[str]:
        """Grid lines at the y ticks, the left and bottom spines, tick labels and axis labels."""
        x0, x1, y0, y1 = self.left, self.w - self.right, self.top, self.h - self.bottom
        out = [f'<line x1="{_n(x0)}" y1="{_n(self.y(t))}" x2="{_n(x1)}" y2="{_n(self.y(t))}" stroke="{GRID}" '
               f'stroke-width="0.6"/>' for t in self.yticks]
        out += [f'<text x="{_n(x0 - 6)}" y="{_n(self.y(t) + 3)}" text-anchor="end" font-size="9" fill="{TICK_TEXT}">'
                f'{_esc(label)}</text>' for t, label in zip(self.yticks, self.ytick_labels, strict=True)]
        out += [f'<text x="{_n(self.x(t))}" y="{_n(y1 + 14)}" text-anchor="middle" font-size="9" '
                f'fill="{TICK_TEXT}">{_esc(label)}</text>' for t, label in zip(self.xticks, self.xtick_labels,
                                                                               strict=True)]
        if self.xlabel:
            out.append(f'<text x="{_n((x0 + x1) / 2)}" y="{_n(self.h - 6)}" text-anchor="middle" font-size="9">'
                       f'{_esc(self.xlabel)}</text>')
        if self.ylabel:
            cy = (y0 + y1) / 2
            out.append(f'<text x="12" y="{_n(cy)}" text-anchor="middle" font-size="9" '
                       f'transform="rotate(-90 12 {_n(cy)})">{_esc(self.ylabel)}</text>')
        return out

    def svg(self, label: str) -> Markup:
        """The chart as one inline ``<svg>`` element labelled ``label`` for screen readers."""
        x0, x1, y1 = self.left, self.w - self.right, self.h - self.bottom
        spines = (f'<line x1="{_n(x0)}" y1="{_n(self.top)}" x2="{_n(x0)}" y2="{_n(y1)}" stroke="{AXIS}"/>'
                  f'<line x1="{_n(x0)}" y1="{_n(y1)}" x2="{_n(x1)}" y2="{_n(y1)}" stroke="{AXIS}"/>')
        axes = self._axes()
        grid, labels = axes[:len(self.yticks)], axes[len(self.yticks):]
        return Markup(f'<svg viewBox="0 0 {_n(self.w)} {_n(self.h)}" class="chart" role="img" '
                      f'aria-label="{_esc(label)}" style="{_FONT}">' + "".join(grid) + "".join(self.body) + spines
                      + "".join(labels) + self.legend_svg + "</svg>")
