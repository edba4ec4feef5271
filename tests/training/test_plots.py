"""The evaluation plots of a training run: valid PNG files, written atomically, no pyplot state left."""

from __future__ import annotations

from pathlib import Path

from model.metrics import profit_curve
from tests.model.test_metrics import P_CLS, P_LIFT, Y_CLS, Y_LIFT
from training.plots import plot_lift, plot_pr_curve, plot_profit, plot_reliability

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def test_plots_write_png_files(tmp_path: Path) -> None:
    curve = profit_curve(Y_LIFT, P_LIFT, 100.0, contact_cost=1.0, incentive_cost=10.0, acceptance_rate=0.3)
    paths = [
        plot_reliability(Y_CLS, P_CLS, tmp_path / "rel.png", n_bins=5, label="xgb"),
        plot_lift(Y_LIFT, P_LIFT, tmp_path / "lift.png"),
        plot_pr_curve(Y_LIFT, P_LIFT, tmp_path / "sub" / "pr.png"),
        plot_profit(curve, tmp_path / "profit.png"),
    ]
    assert paths == [
        tmp_path / "rel.png",
        tmp_path / "lift.png",
        tmp_path / "sub" / "pr.png",
        tmp_path / "profit.png",
    ]
    assert all(_is_png(p) for p in paths)
    # No temporary files left behind by the atomic writes.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "lift.png",
        "pr.png",
        "profit.png",
        "rel.png",
    ]


def test_plots_leave_no_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_lift(Y_LIFT, P_LIFT, tmp_path / "lift.png")
    assert plt.get_fignums() == before
