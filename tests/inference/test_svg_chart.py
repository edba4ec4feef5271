"""The report's hand-written SVG charts (inference.svg_chart): round ticks, escaping, geometry."""

from __future__ import annotations

import re

import pytest

from inference.svg_chart import Chart, LegendEntry, nice_ticks, number_format, percent


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0.0, 760.0, [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0]),
    (0.0, 6.93, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    (0.0, 0.6, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    (-0.3, 0.2, [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2]),
], ids=["unit", "counts", "lift", "effects", "negative"])
def test_nice_ticks(lo: float, hi: float, expected: list[float]) -> None:
    assert nice_ticks(lo, hi) == pytest.approx(expected)


def test_nice_ticks_of_an_empty_range_is_one_tick() -> None:
    assert nice_ticks(2.0, 2.0) == [2.0]


def test_tick_labels() -> None:
    assert [number_format([0, 0.5, 1])(v) for v in (0, 0.5, 1)] == ["0.0", "0.5", "1.0"]
    assert [number_format([0, 100, 200])(v) for v in (0, 100)] == ["0", "100"]
    assert number_format([0, 0.25, 0.5])(0.25) == "0.25"
    assert percent(0.2) == "20%"


def test_chart_escapes_text_and_maps_data_to_the_plot_area() -> None:
    chart = Chart(4.0, 2.0, (0.0, 10.0), (0.0, 1.0), xlabel="x <b>", ylabel="y & z", xticks=[0, 10],
                  yticks=[0.0, 1.0], xtick_labels=["0", "10"], ytick_labels=["0", "1"])
    assert chart.x(0.0) == chart.left and chart.x(10.0) == pytest.approx(chart.w - chart.right)
    assert chart.y(0.0) == pytest.approx(chart.h - chart.bottom) and chart.y(1.0) == pytest.approx(chart.top)
    chart.bar(0.0, 5.0, 0.0, 0.5, "#123456")
    chart.line([0, 10], [0, 1], "#654321", markers=True)
    chart.legend([LegendEntry('<script>alert("x")</script>', "#123456")], title="T & U")
    svg = str(chart.svg('label "quoted"'))
    assert svg.startswith('<svg viewBox="0 0 288 144" class="chart" role="img" aria-label="label &#34;quoted&#34;"')
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "x &lt;b&gt;" in svg and "y &amp; z" in svg
    assert len(re.findall("<circle", svg)) == 2 and svg.count("<rect") == 2  # the bar and the legend swatch
    assert "http" not in svg and svg == str(chart.svg('label "quoted"'))  # no namespace URL; deterministic
