"""Self-contained HTML report for retention analysts.

One file that opens offline: inline CSS, charts as inline SVG (:mod:`inference.svg_chart`) or HTML/CSS bars, one
inline script (``templates/report.js``: filter, sort, search, detail panel) and no network resources.
The Content-Security-Policy allows only that script, by its SHA-256, so nothing else can run or load.
All data reaches the page through Jinja2 with autoescaping on, or as a JSON data block with ``<``, ``>``
and ``&`` escaped that the script reads and inserts as text only, so customer data cannot inject markup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from churn.io import write_text
from churn.vocab import DEFAULT_VALUE_TIERS, RISK_TIERS
from inference.svg_chart import AXIS, TAB10, Chart, LegendEntry, nice_ticks, number_format, percent

logger = logging.getLogger(__name__)

RISK_COLOURS = {"high": "#c0392b", "medium": "#e08e0b", "low": "#2e8b57"}
DRIFT_STATUSES = ("drift", "warning", "stable")
_OTHER_COLOUR = "#7f8c8d"
_TEMPLATE = "report.html.j2"
_SCRIPT = "report.js"
_MAX_IMPORTANCE_BARS = 20
_MAX_DRIFT_ROWS = 8


def render_report(
    path: str | Path,
    *,
    summary: dict,
    scores: pd.DataFrame,
    alerts: pd.DataFrame,
    global_importance: pd.DataFrame | None = None,
    drift: pd.DataFrame | None = None,
    top_n: int = 25,
    explain_top: int = 10,
    drift_rows: int = _MAX_DRIFT_ROWS,
) -> Path:
    """Render the analyst report to ``path`` (written atomically) and return the path."""
    summary = dict(summary or {})
    scores = scores if scores is not None else pd.DataFrame()
    alerts = _sorted_alerts(alerts if alerts is not None else pd.DataFrame())
    impact_scale = _impact_scale(alerts)
    currency = _fmt_text(summary.get("currency")) or "EUR"
    env = _environment(currency)
    rows = _alert_rows(alerts)  # every alert: the page filters and sorts them (top_n is kept for callers)
    script, script_hash = _script()

    context = {
        "header": _header(summary),
        "currency": currency,
        "kpis": _kpis(summary, scores, alerts),
        "metrics": _metrics(summary),
        "card": _card_section(summary.get("model_card")),
        "risk": _risk_section(scores),
        "value": _value_section(scores),
        "alerts": rows,
        "filters": _filter_options(rows),
        "not_selected": _not_selected_counts(rows),
        "alert_data": _json_block(_alert_details(alerts, rows, impact_scale, env)),
        "script": script,
        "script_hash": script_hash,
        "n_alerts_total": len(alerts),
        "top_n": int(top_n),
        "explanations": _explanations(alerts.head(max(int(explain_top), 0)), impact_scale),
        "importance": _importance_section(global_importance),
        "survival": _survival_section(alerts),
        "drift": _drift_section(drift, summary, drift_rows),
        "estimate": _estimate_section(summary),
        "playbooks": _playbook_section(alerts),
        "decisions": summary.get("decisions"),
    }
    html = env.get_template(_TEMPLATE).render(**context)
    out = write_text(path, html)
    logger.debug(  # debug: a caller that stages outputs names the final path itself
        "wrote report %s (%d alerts, %d scored, %.0f kB)", out, len(alerts), len(scores), len(html) / 1e3
    )
    return out


# --------------------------------------------------------------------------- template and formatting


def _script() -> tuple[Markup, Markup]:
    """The packaged page script and its CSP source expression (``'sha256-…'``)."""
    src = resources.files("inference.templates").joinpath(_SCRIPT).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(src.encode("utf-8")).digest()).decode("ascii")
    return Markup(src), Markup(f"'sha256-{digest}'")


def _jsonable(x: Any) -> Any:
    """``x`` with NaN/NaT/NA as None and numpy scalars as Python ones, so it serialises as strict JSON."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if _missing(x):
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _float(x)
    return x if isinstance(x, str) else str(x)


def _json_block(obj: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` left raw."""
    text = json.dumps(_jsonable(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                     ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return Markup(text)


def _environment(currency: str = "EUR") -> jinja2.Environment:
    """Jinja2 environment reading the packaged template, autoescaping everything; amounts carry ``currency``."""
    source = resources.files("inference.templates").joinpath(_TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(
        loader=jinja2.DictLoader({_TEMPLATE: source}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=_fmt_pct,
        money=lambda x: _with_unit(_fmt_money(x), currency),
        compact=lambda x: _with_unit(_fmt_compact(x), currency),
        num=_fmt_num,
        pp=_fmt_pp,
        text=_fmt_text,
    )
    return env


def _missing(x: Any) -> bool:
    """True for None, NaN, NaT and pd.NA (scalars only; containers are never 'missing')."""
    if x is None:
        return True
    if isinstance(x, (list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _float(x: Any) -> float | None:
    """``x`` as a finite float, or None."""
    if _missing(x) or isinstance(x, (bool, np.bool_)):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt_pct(x: Any, digits: int = 1) -> str:
    f = _float(x)
    return "—" if f is None else f"{f * 100:.{digits}f}%"


def _fmt_money(x: Any, currency: str = "") -> str:
    f = _float(x)
    if f is None:
        return "—"
    return f"{currency} {f:,.2f}" if currency else f"{f:,.2f}"


def _with_unit(text: str, unit: str) -> str:
    """An amount with its currency, as the reasons write it (``features.catalogue.format_value``): "EUR 1,234.50"."""
    return text if text == "—" else f"{unit} {text}"


def _fmt_compact(x: Any) -> str:
    """Large amounts in a short form for KPI cards: 1.23M, 45.6k, 812."""
    f = _float(x)
    if f is None:
        return "—"
    a = abs(f)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{f / div:,.{1 if a >= 10 * div else 2}f}{suffix}"
    return f"{f:,.0f}" if a >= 100 else f"{f:,.2f}"


def _fmt_num(x: Any, digits: int = 0) -> str:
    f = _float(x)
    return "—" if f is None else f"{f:,.{digits}f}"


def _fmt_pp(x: Any) -> str:
    """Signed probability points (input already in points)."""
    f = _float(x)
    return "—" if f is None else f"{f:+.1f} pts"


def _fmt_text(x: Any) -> str:
    return "" if _missing(x) else str(x)


def _col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """Column ``name`` or a Series of ``default`` when the column is absent."""
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    """Numeric view of a column (absent or unparsable values become NaN)."""
    return pd.to_numeric(_col(df, name), errors="coerce").astype(float)


def _flag(x: Any) -> bool:
    """Truthiness that treats NaN/None as False and accepts 'true'/'1' strings."""
    if _missing(x):
        return False
    if isinstance(x, str):
        return x.strip().lower() in {"true", "1", "yes", "y", "t"}
    return bool(x)


def _tier(x: Any) -> str:
    return "unknown" if _missing(x) or str(x).strip() == "" else str(x).strip().lower()


def _ordered(values: Iterable[str], known: tuple[str, ...]) -> list[str]:
    """Known tiers in their natural order first, then anything unexpected, sorted."""
    present = set(values)
    return [t for t in known if t in present] + sorted(present - set(known))


# --------------------------------------------------------------------------- SVG charts (inference.svg_chart)


def _attr(text: str) -> str:
    return str(Markup.escape(text))


def _ymax(top: float) -> float:
    """An upper axis limit with 5% headroom (as a plotting library's default margin)."""
    return top * 1.05 if top > 0 else 1.0


def _histogram_svg(prob: pd.Series, tier: pd.Series) -> Markup | None:
    """Stacked histogram of churn probability, coloured by risk tier."""
    mask = prob.notna()
    if not mask.any():
        return None
    p, t = prob[mask].clip(0.0, 1.0).to_numpy(dtype=float), tier[mask].to_numpy()
    bins = np.linspace(0.0, 1.0, 21)
    tiers = _ordered(pd.unique(t), RISK_TIERS)
    counts = [np.histogram(p[t == k], bins=bins)[0] for k in tiers]
    top = _ymax(float(np.sum(counts, axis=0).max()))
    yt = nice_ticks(0.0, top)
    xt = nice_ticks(0.0, 1.0, 5)
    chart = Chart(7.5, 2.6, (0.0, 1.0), (0.0, top), "Churn probability", "Customers", xt, yt,
                  [percent(v) for v in xt], [number_format(yt)(v) for v in yt])
    below = np.zeros(len(bins) - 1)
    for k, c in zip(tiers, counts, strict=True):
        colour = RISK_COLOURS.get(k, _OTHER_COLOUR)
        for i in np.flatnonzero(c):
            chart.bar(bins[i], bins[i + 1], below[i], below[i] + c[i], colour, edge="white")
        below += c
    chart.legend([LegendEntry(str(k), RISK_COLOURS.get(k, _OTHER_COLOUR)) for k in tiers], title="Risk tier")
    return chart.svg("Histogram of churn probability by risk tier")


def _hbars(values: pd.Series, labels: list[str], colours: list[str], height: float, xlabel: str) -> Chart:
    """Horizontal bars, the first row at the bottom (callers reverse their rows to put the largest on top)."""
    v = values.to_numpy(dtype=float)
    lo, hi = min(0.0, float(v.min())), float(v.max())
    hi = _ymax(hi) if hi > 0 else (0.05 * -lo if lo < 0 else 1.0)
    xt = nice_ticks(lo, hi)
    y = list(range(len(v)))
    chart = Chart(7.5, height, (lo, hi), (-0.6, len(v) - 0.4), xlabel, "", xt, y, [number_format(xt)(x) for x in xt],
                  labels)
    for i, (val, colour) in enumerate(zip(v, colours, strict=True)):
        chart.bar(0.0, val, i - 0.35, i + 0.35, colour)
    return chart


def _importance_svg(imp: pd.DataFrame) -> Markup:
    """Horizontal bars of mean |impact| per feature group, coloured by family."""
    families = list(dict.fromkeys(imp["family"]))
    imp = imp.iloc[::-1]  # largest at the top
    colour = {f: TAB10[i % 10] for i, f in enumerate(families)}
    chart = _hbars(imp["mean_abs_impact"], [str(g) for g in imp["group"]], [colour[f] for f in imp["family"]],
                   0.8 + 0.28 * len(imp), "Mean |impact| (probability points)")
    if len(families) > 1:
        chart.legend([LegendEntry(str(f), colour[f]) for f in families], loc="lower right", title="Family")
    return chart.svg("Global feature-group importance")


def _survival_svg(alerts: pd.DataFrame, horizons: list[int]) -> Markup:
    """Survival curves of the top alerts through the model's horizon probabilities (S(0) = 1)."""
    days = [0, *horizons]
    pad = 0.05 * days[-1]
    yt = nice_ticks(0.0, 100.0, 5)
    chart = Chart(7.5, 3.2, (-pad, days[-1] + pad), (0.0, 100.0), "Days after the cutoff", "Still a customer (%)",
                  days, yt, [str(d) for d in days], [number_format(yt)(v) for v in yt])
    entries = []
    for i, (_, row) in enumerate(alerts.iterrows()):
        surv = [1.0] + [1.0 - float(row[f"churn_within_{h}d"]) for h in horizons]
        colour = TAB10[i % 10]
        chart.line(days, [100 * v for v in surv], colour, width=1.2, markers=True)
        entries.append(LegendEntry(str(row["customer_id"]), colour, "marker"))
    if entries:
        chart.legend(entries, loc="lower left", size=7, ncol=2)
    return chart.svg("Survival curves of the top alerts")


def _unit_chart(ylim: tuple[float, float], xlabel: str, ylabel: str, y_percent: bool) -> Chart:
    """A 3.6 x 3.2 inch chart over x in [0, 1] shown as percentages (calibration, lift)."""
    xt = nice_ticks(0.0, 1.0, 5)
    yt = nice_ticks(*ylim) if not y_percent else xt
    ylabels = [percent(v) for v in yt] if y_percent else [number_format(yt)(v) for v in yt]
    return Chart(3.6, 3.2, (0.0, 1.0), ylim, xlabel, ylabel, xt, yt, [percent(v) for v in xt], ylabels)

def _survival_section(alerts: pd.DataFrame, n: int = 8) -> dict[str, Any] | None:
    """Time to churn of the top alerts: a curve per customer and a table, when the model has a survival part."""
    horizons = sorted(int(c[len("churn_within_"):-1]) for c in alerts.columns
                      if c.startswith("churn_within_") and c.endswith("d"))
    if not len(alerts) or not horizons or "median_days_to_churn" not in alerts:
        return None
    top = alerts.head(n)
    rows = [{"customer_id": _fmt_text(r["customer_id"]), "urgency": _fmt_text(r.get("urgency")),
             "median_days": r["median_days_to_churn"], "timing": _fmt_text(r.get("timing")),
             "chances": [(h, r[f"churn_within_{h}d"]) for h in horizons]} for _, r in top.iterrows()]
    counts = alerts["urgency"].value_counts().to_dict() if "urgency" in alerts else {}
    return {"chart": _survival_svg(top, horizons), "rows": rows, "horizons": horizons, "urgency": counts}


def _calibration_svg(bins: list[Mapping[str, Any]]) -> Markup:
    """Reliability diagram: mean predicted probability against observed churn rate per bin."""
    chart = _unit_chart((0.0, 1.0), "Predicted churn probability", "Observed churn rate", y_percent=True)
    chart.line([0, 1], [0, 1], AXIS, width=1, dashed=True)
    chart.line([float(b["p_mean"]) for b in bins], [float(b["y_rate"]) for b in bins], "#1f4e79", markers=True)
    chart.legend([LegendEntry("perfect", AXIS, "dashed"), LegendEntry("model", "#1f4e79", "marker")],
                 loc="upper left")
    return chart.svg("Calibration: predicted against observed churn, out of time")


def _lift_svg(points: list[Mapping[str, Any]]) -> Markup:
    """Lift of contacting the top X% by predicted risk, against random (lift 1)."""
    xs, ys = [float(p["fraction"]) for p in points], [float(p["lift"]) for p in points]
    chart = _unit_chart((0.0, _ymax(max([1.0, *ys]))), "Share of customers contacted (highest risk first)",
                        "Lift (× churn rate of random picks)", y_percent=False)
    chart.line(xs, ys, "#c0392b", markers=True)
    chart.line([0, 1], [1.0, 1.0], AXIS, width=1, dashed=True)
    chart.legend([LegendEntry("model", "#c0392b", "marker"), LegendEntry("random", AXIS, "dashed")])
    return chart.svg("Lift curve, out of time")


_CARD_LABELS = {"test_roc_auc": ("ROC-AUC", "num"), "test_pr_auc": ("PR-AUC", "num"),
                "test_lift_top10": ("Lift in top 10%", "x"), "test_capture_top10": ("Churners caught in top 10%", "pct"),
                "test_ece": ("Calibration error (ECE)", "pct"), "test_brier": ("Brier score", "num"),
                "test_log_loss": ("Log loss", "num"), "test_base_rate": ("Churn rate (test)", "pct"),
                "baseline_logistic_roc_auc": ("Logistic baseline ROC-AUC", "num"),
                "baseline_xgb_default_roc_auc": ("Untuned XGBoost ROC-AUC", "num")}


def _metric_text(x: Any, kind: str) -> str:
    f = _float(x)
    if f is None:
        return "—"
    return _fmt_pct(f) if kind == "pct" else (f"{f:.2f}×" if kind == "x" else f"{f:.3f}")


def _card_section(card: Any) -> dict[str, Any] | None:
    """Model card: version, training facts, out-of-time metrics (with the previous champion's), plots."""
    if not isinstance(card, Mapping) or not card:
        return None
    metrics = card.get("metrics") or {}
    prev = card.get("previous") or {}
    prev_metrics = prev.get("metrics") or {}
    rows = [{"name": label, "value": _metric_text(metrics.get(k), kind),
             "previous": _metric_text(prev_metrics.get(k), kind) if prev else None,
             "delta": (None if _float(metrics.get(k)) is None or _float(prev_metrics.get(k)) is None
                       else _float(metrics[k]) - _float(prev_metrics[k]))}
            for k, (label, kind) in _CARD_LABELS.items() if k in metrics or k in prev_metrics]
    cutoffs = card.get("cutoffs") or {}
    bins = [b for b in card.get("reliability") or [] if _float(b.get("p_mean")) is not None
            and _float(b.get("y_rate")) is not None]
    lift = [p for p in card.get("lift") or [] if _float(p.get("lift")) is not None]
    return {
        "name": _fmt_text(card.get("name")), "version": _fmt_text(card.get("version")) or "—",
        "aliases": ", ".join(card.get("aliases") or []), "run_id": _fmt_text(card.get("run_id")),
        "trained_at": _fmt_text(card.get("trained_at")) or "—", "n_test": _float(card.get("n_test")),
        "cutoffs": {k: ", ".join(str(c) for c in cutoffs.get(k) or []) or "—" for k in ("train", "valid", "test")},
        "horizon_days": _float(card.get("horizon_days")),
        "rows": rows, "previous_version": _fmt_text(prev.get("version")) if prev else "",
        "previous_trained_at": _fmt_text(prev.get("trained_at")) if prev else "",
        "calibration": _calibration_svg(bins) if bins else None, "lift": _lift_svg(lift) if lift else None,
    }


# --------------------------------------------------------------------------- sections


def _sorted_alerts(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts in action order (rank ascending when a rank column exists)."""
    if len(alerts) and "rank" in alerts.columns:
        order = pd.to_numeric(alerts["rank"], errors="coerce")
        alerts = alerts.iloc[np.argsort(order.fillna(np.inf).to_numpy(), kind="stable")]
    return alerts.reset_index(drop=True)


def _header(summary: Mapping[str, Any]) -> dict[str, Any]:
    h = summary.get("input_hash")
    h = "" if _missing(h) else str(h)
    return {
        "model_name": _fmt_text(summary.get("model_name")) or "churn model",
        "model_version": _fmt_text(summary.get("model_version")) or "—",
        "model_uri": _fmt_text(summary.get("model_uri")),
        "cutoff": _fmt_text(summary.get("cutoff")) or "—",
        "input_hash": h,
        "input_hash_short": (h[:19] + "…") if len(h) > 20 else h,
        "generated_at": _fmt_text(summary.get("generated_at")) or "—",
        "horizon_days": _float(summary.get("horizon_days")),
    }


def _kpis(summary: Mapping[str, Any], scores: pd.DataFrame, alerts: pd.DataFrame) -> list[dict[str, str]]:
    """KPI cards: label, value, note (all plain text)."""
    cur = _fmt_text(summary.get("currency")) or "EUR"
    n_scored = _float(summary.get("n_scored"))
    n_scored = int(n_scored) if n_scored is not None else len(scores)
    n_alerts = _float(summary.get("n_alerts"))
    n_alerts = int(n_alerts) if n_alerts is not None else len(alerts)
    tiers = _col(scores, "risk_tier").map(_tier)
    n_high = int((tiers == "high").sum())
    share_high = n_high / len(scores) if len(scores) else None
    var_total = _num(scores, "value_at_risk").sum(min_count=1)
    var_alerts = _num(alerts, "value_at_risk").sum(min_count=1)
    control = _col(alerts, "control_group", False).map(_flag)
    selected = _col(alerts, "selected", None)
    has_selected = "selected" in alerts.columns
    selected = selected.map(_flag) if has_selected else pd.Series(True, index=alerts.index)

    cards = [
        {"label": "Customers scored", "value": _fmt_num(n_scored), "note": ""},
        {
            "label": "Alerts",
            "value": _fmt_num(n_alerts),
            "note": _kind_note(alerts) or _share_note(n_alerts, n_scored, "of scored"),
        },
        {
            "label": "High risk",
            "value": _fmt_pct(share_high),
            "note": f"{n_high:,} customers",
            "tone": "high",
        },
        {
            "label": "Value at risk (all)",
            "value": _with_unit(_fmt_compact(var_total), cur),
            "note": "across all scored customers",
        },
        {
            "label": "Value at risk in alerts",
            "value": _with_unit(_fmt_compact(var_alerts), cur),
            "note": _share_note(var_alerts, var_total, "of total"),
        },
    ]
    budget = _float(summary.get("budget"))
    if budget is not None:
        cards.append({"label": "Budget", "value": _with_unit(_fmt_compact(budget), cur), "note": ""})
    if "expected_net_value" in alerts.columns:
        env = _num(alerts, "expected_net_value")[selected & ~control].sum(min_count=1)
        note = "contacted customers" if has_selected else "treated alerts"
        cards.append(
            {"label": "Expected net value", "value": _with_unit(_fmt_compact(env), cur), "note": note, "tone": "good"}
        )
    if has_selected:
        n_contact = int((selected & ~control).sum())
        cards.append({"label": "To contact", "value": _fmt_num(n_contact), "note": "selected under budget"})
    cards.append(
        {
            "label": "Control group",
            "value": _fmt_num(int(control.sum())),
            "note": "do NOT contact",
            "tone": "control",
        }
    )
    for c in cards:
        c.setdefault("tone", "")
    return cards


def _kind_note(alerts: pd.DataFrame) -> str:
    """'145 at risk + 1,160 low-risk contacts' when the files list chosen contacts below the alert tier."""
    if "alert_kind" not in alerts.columns:
        return ""
    n_chosen = int((alerts["alert_kind"].astype(str) == "chosen_contact").sum())
    if not n_chosen:
        return ""
    return f"{len(alerts) - n_chosen:,} at risk + {n_chosen:,} lower-risk contacts chosen because they pay"


def _share_note(part: Any, whole: Any, what: str) -> str:
    p, w = _float(part), _float(whole)
    return f"{p / w:.1%} {what}" if p is not None and w else ""


def _metrics(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    m = summary.get("metrics") or {}
    if not isinstance(m, Mapping):
        return []
    out = []
    for k, v in m.items():
        f = _float(v)
        out.append({"name": str(k), "value": "—" if f is None else f"{f:.4g}"})
    return out


def _risk_section(scores: pd.DataFrame) -> dict[str, Any]:
    prob = _num(scores, "churn_probability")
    tiers = _col(scores, "risk_tier").map(_tier)
    var = _num(scores, "value_at_risk")
    n = len(scores)
    rows = []
    for t in _ordered(tiers.unique(), RISK_TIERS):
        m = tiers == t
        count = int(m.sum())
        rows.append(
            {
                "tier": t,
                "count": count,
                "share": count / n if n else 0.0,
                "mean_prob": prob[m].mean() if m.any() else None,
                "value_at_risk": var[m].sum(min_count=1),
                "colour": RISK_COLOURS.get(t, _OTHER_COLOUR),
            }
        )
    return {
        "n": n,
        "histogram": _histogram_svg(prob, tiers),
        "tiers": rows,
        "n_missing_prob": int(prob.isna().sum()),
        "mean_prob": prob.mean() if prob.notna().any() else None,
    }


def _value_section(scores: pd.DataFrame) -> dict[str, Any]:
    """Value tier × risk tier grid of counts and value at risk, shaded by value at risk."""
    vt = _col(scores, "value_tier").map(_tier)
    rt = _col(scores, "risk_tier").map(_tier)
    var = _num(scores, "value_at_risk").fillna(0.0)
    vts, rts = _ordered(vt.unique(), DEFAULT_VALUE_TIERS), _ordered(rt.unique(), RISK_TIERS)
    counts = pd.crosstab(vt, rt).reindex(index=vts, columns=rts, fill_value=0) if len(scores) else None
    sums = (
        pd.crosstab(vt, rt, values=var, aggfunc="sum").reindex(index=vts, columns=rts).fillna(0.0)
        if len(scores)
        else None
    )
    vmax = float(sums.to_numpy().max()) if sums is not None and sums.size else 0.0
    rows = []
    for v in vts:
        cells = []
        for r in rts:
            s = float(sums.loc[v, r])
            cells.append(
                {
                    "count": int(counts.loc[v, r]),
                    "var": s,
                    "alpha": round(0.05 + 0.45 * s / vmax, 3) if vmax > 0 else 0.0,
                }
            )
        rows.append(
            {"tier": v, "cells": cells, "count": int(counts.loc[v].sum()), "var": float(sums.loc[v].sum())}
        )
    return {"risk_tiers": rts, "rows": rows}


def _reason_list(cell: Any) -> list[dict[str, Any]]:
    """Normalise a ``reasons`` cell (list/array of dicts, or its JSON text) into a list of dicts."""
    if _missing(cell):
        return []
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except ValueError:
            return []
    if isinstance(cell, Mapping):
        cell = [cell]
    if not isinstance(cell, (list, tuple, np.ndarray)):
        return []
    return [dict(r) for r in cell if isinstance(r, Mapping)]


def _impact_scale(alerts: pd.DataFrame) -> float:
    """Multiplier turning ``impact`` values into probability points.

    Impacts are expected on the probability scale (0.05 = 5 points). A probability-scale contribution
    can never exceed 1 in size, so any larger value means the producer already sent points.
    """
    if "reasons" not in alerts.columns:
        return 100.0
    impacts = [_float(r.get("impact")) for cell in alerts["reasons"] for r in _reason_list(cell)]
    biggest = max((abs(i) for i in impacts if i is not None), default=0.0)
    if biggest > 1.0:
        logger.warning(
            "reason impacts exceed 1 (max %.3g): treating them as probability points already", biggest
        )
        return 1.0
    return 100.0


def _action(rec: Mapping[str, Any]) -> tuple[str, str]:
    """The alert's action (contact / control / not_selected / alert) and, for not-selected ones, why."""
    if _flag(rec.get("control_group")):
        return "control", ""
    if "selected" not in rec:
        return "alert", ""
    if _flag(rec.get("selected")):
        return "contact", ""
    given = _fmt_text(rec.get("selection_reason")).strip()
    if given:
        return "not_selected", given
    env = _float(rec.get("expected_net_value"))
    return "not_selected", "negative value" if env is not None and env <= 0 else "over budget"


def _action_sentence(action: str, why: str, env_text: str) -> str:
    """One plain sentence per alert saying what to do and why (shown in the detail panel)."""
    if action == "control":
        return "Control: held out at random to measure the playbook. Do NOT contact this customer."
    if action == "contact":
        return f"Contact: selected within the budget; expected net value of contacting {env_text}."
    if action == "not_selected" and why == "negative value":
        return (f"Not selected: negative value. Contacting is expected to cost more than it saves "
                f"(expected net value {env_text}).")
    if action == "not_selected" and why == "over budget":
        return f"Not selected: over budget. Worth contacting (expected net value {env_text}) but the budget ran out."
    if action == "not_selected":
        return f"Not selected: {why}."
    return "Alert: no contact selection was made for this run."


def _groups(rec: Mapping[str, Any]) -> list[str]:
    """Reason groups of an alert: the ``reason_groups`` list when present, else from the structured reasons."""
    cell = rec.get("reason_groups")
    if isinstance(cell, str):
        cell = [g for g in cell.split("|") if g]
    if isinstance(cell, (list, tuple, np.ndarray)) and len(cell):
        return [str(g) for g in cell]
    return list(dict.fromkeys(_fmt_text(r.get("group")) for r in _reason_list(rec.get("reasons")) if r.get("group")))


def _alert_rows(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per alert for the table: values plus the keys the page filters and sorts on."""
    rows = []
    for i, rec in enumerate(alerts.to_dict("records")):
        reasons = [t for t in (_fmt_text(rec.get(f"reason_{k}")).strip() for k in range(1, 10)) if t]
        action, why = _action(rec)
        rank = _float(rec.get("rank"))
        risk = _tier(rec.get("risk_tier"))
        rows.append({
            "rank": int(rank) if rank is not None else i + 1,
            "customer_id": _fmt_text(rec.get("customer_id")) or "—",
            "probability": rec.get("churn_probability"),
            "risk_tier": risk,
            "risk_badge": risk if risk in RISK_TIERS else "unknown",
            "value_tier": _tier(rec.get("value_tier")),
            "lifecycle_stage": _fmt_text(rec.get("lifecycle_stage")),
            "lifetime_value": rec.get("lifetime_value"),
            "value_at_risk": rec.get("value_at_risk"),
            "expected_net_value": rec.get("expected_net_value"),
            "reasons": reasons[:3],
            "groups": _groups(rec),
            "protective": _fmt_text(rec.get("protective_reason")).strip(),
            "playbook_name": _fmt_text(rec.get("playbook_name")) or _fmt_text(rec.get("playbook_id")),
            "playbook_action": _fmt_text(rec.get("playbook_action")),
            "playbook_channel": _fmt_text(rec.get("playbook_channel")),
            "playbook_owner": _fmt_text(rec.get("playbook_owner")),
            "playbook_rule": _fmt_text(rec.get("playbook_rule")),
            "playbook_kind": _fmt_text(rec.get("playbook_kind")),
            "urgency": _fmt_text(rec.get("urgency")),
            "impact_summary": _fmt_text(rec.get("impact_summary")).strip(),
            "counterfactual": _fmt_text(rec.get("counterfactual")).strip(),
            "change": _fmt_text(rec.get("change_reason")).strip(),  # churn score --previous
            "new_alert": _flag(rec.get("new_alert")),
            "action": action,
            "why": why,
        })
    return rows


def _filter_options(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Values each filter can take, from the alerts themselves (tiers in their natural order)."""
    def values(key: str) -> list[str]:
        return sorted({r[key] for r in rows if r[key]})

    return {
        "risk": _ordered({r["risk_tier"] for r in rows}, RISK_TIERS),
        "value": _ordered({r["value_tier"] for r in rows}, DEFAULT_VALUE_TIERS),
        "playbook": values("playbook_name"),
        "owner": values("playbook_owner"),
        "group": sorted({g for r in rows for g in r["groups"]}),
        "action": [a for a in ("contact", "control", "not_selected", "alert") if any(r["action"] == a for r in rows)],
    }


def _not_selected_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Not-selected alerts per reason (negative value, over budget, or a reason the selection step gave)."""
    counts: dict[str, int] = {}
    for r in rows:
        if r["action"] == "not_selected":
            counts[r["why"]] = counts.get(r["why"], 0) + 1
    return counts


_SHOWN = {"customer_id", "cutoff", "churn_probability", "risk_tier", "value_tier", "lifecycle_stage", "lifetime_value",
          "value_at_risk", "expected_net_value", "protective_reason", "reasons", "reason_groups", "reason_families",
          "control_group", "selected", "rank", "model_name", "model_version", "input_hash", "selection_reason"}
_HISTORY = ("previous_", "prev_", "score_history", "probability_history", "score_change", "probability_change")


def _field_text(name: str, value: Any, env: jinja2.Environment) -> str:
    """A column value as the detail panel shows it: probabilities in %, amounts with the currency."""
    if isinstance(value, (list, tuple, np.ndarray, Mapping)):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    f = _float(value)
    if f is None or isinstance(value, (bool, np.bool_)):
        return _fmt_text(value)
    if "probability" in name or name.startswith("churn_within_") or name.endswith(("_rate", "_share")):
        return _fmt_pct(f)
    if any(w in name for w in ("value", "cost", "revenue", "budget", "amount", "spend")):
        return str(env.filters["money"](f))
    return _fmt_num(f, 0 if f.is_integer() or "days" in name else 3)


def _detail_fields(rec: Mapping[str, Any], env: jinja2.Environment) -> dict[str, list[list[str]]]:
    """Counterfactual, timing, history and any other columns of an alert as (label, text) pairs."""
    out: dict[str, list[list[str]]] = {"counterfactual": [], "timing": [], "history": [], "extras": []}
    for name, value in rec.items():
        if name in _SHOWN or re.fullmatch(r"reason_\d+", name) or name.startswith("playbook_"):
            continue
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            continue
        if name.startswith("counterfactual"):
            kind = "counterfactual"
        elif name in ("timing", "urgency", "median_days_to_churn", "expected_lifetime_days") or \
                name.startswith("churn_within_"):
            kind = "timing"
        elif name.startswith(_HISTORY) or name.endswith(("_delta", "_change", "_previous")):
            kind = "history"
        else:
            kind = "extras"
        out[kind].append([name.replace("_", " "), _field_text(name, value, env)])
    return out


def _alert_details(alerts: pd.DataFrame, rows: list[dict[str, Any]], scale: float,
                   env: jinja2.Environment) -> list[dict[str, Any]]:
    """Per-alert data for the detail panel (read by the page script, inserted as text only)."""
    money = env.filters["money"]
    bars = _explanations(alerts, scale)
    out = []
    for rec, row, x in zip(alerts.to_dict("records"), rows, bars, strict=True):
        env_text = money(row["expected_net_value"])
        out.append({
            **{k: row[k] for k in ("customer_id", "rank", "risk_tier", "risk_badge", "value_tier", "lifecycle_stage",
                                   "protective", "playbook_name", "playbook_action", "playbook_channel",
                                   "playbook_owner", "playbook_kind", "playbook_rule", "action")},
            "probability_text": _fmt_pct(row["probability"]),
            "lifetime_value_text": money(row["lifetime_value"]),
            "value_at_risk_text": money(row["value_at_risk"]),
            "expected_net_value_text": env_text,
            "action_reason": _action_sentence(row["action"], row["why"], env_text),
            "playbook_cost_text": money(rec.get("playbook_cost")) if "playbook_cost" in rec else "",
            "playbook_sla": _fmt_num(rec.get("playbook_sla_hours")) + (" h" if _float(rec.get("playbook_sla_hours")) is not None else ""),
            "bars": [{**b, "points_text": _fmt_pp(b["points"])} for b in x["bars"]],
            **_detail_fields(rec, env),
        })
    return out


def _explanations(alerts: pd.DataFrame, scale: float) -> list[dict[str, Any]]:
    """Diverging-bar data per customer; bar widths are relative to that customer's largest impact."""
    out = []
    for rec in alerts.to_dict("records"):
        bars = []
        for r in _reason_list(rec.get("reasons")):
            impact = _float(r.get("impact"))
            if impact is None:
                continue
            label = (
                _fmt_text(r.get("text")) or _fmt_text(r.get("group")) or _fmt_text(r.get("feature")) or "—"
            )
            bars.append(
                {
                    "label": label,
                    "group": _fmt_text(r.get("group")),
                    "family": _fmt_text(r.get("family")),
                    "points": impact * scale,
                }
            )
        bars.sort(key=lambda b: (b["points"] < 0, -abs(b["points"])))
        biggest = max((abs(b["points"]) for b in bars), default=0.0)
        for b in bars:
            b["width"] = round(100.0 * abs(b["points"]) / biggest, 1) if biggest > 0 else 0.0
            b["direction"] = "up" if b["points"] > 0 else "down"
        out.append(
            {
                "rank": rec.get("rank"),
                "customer_id": _fmt_text(rec.get("customer_id")) or "—",
                "probability": rec.get("churn_probability"),
                "risk_tier": _tier(rec.get("risk_tier")),
                "value_tier": _tier(rec.get("value_tier")),
                "control": _flag(rec.get("control_group")),
                "bars": bars,
            }
        )
    return out


def _importance_section(imp: pd.DataFrame | None) -> dict[str, Any] | None:
    if imp is None:
        return None
    df = pd.DataFrame(
        {
            "group": _col(imp, "group").map(_fmt_text),
            "family": _col(imp, "family").map(lambda x: _fmt_text(x) or "other"),
            "mean_abs_impact": _num(imp, "mean_abs_impact"),
        }
    )
    df = df[df["mean_abs_impact"].notna() & (df["group"] != "")]
    df = df.sort_values("mean_abs_impact", ascending=False, kind="stable")
    # Same unit rule as per-customer impacts: probability scale unless a value could only be points.
    if len(df) and df["mean_abs_impact"].abs().max() <= 1.0:
        df["mean_abs_impact"] = df["mean_abs_impact"] * 100.0
    shown = df.head(_MAX_IMPORTANCE_BARS)
    return {
        "chart": _importance_svg(shown) if len(shown) else None,
        "n_total": len(df),
        "n_shown": len(shown),
    }


def _drift_section(drift: pd.DataFrame | None, summary: Mapping[str, Any],
                   max_rows: int = _MAX_DRIFT_ROWS) -> dict[str, Any] | None:
    """The few drifts that matter (drifted or warning first, then the model's important inputs), with a chart.

    The full table is ``drift.csv``. A retrain callout appears only when the scoring run recommended it.
    """
    if drift is None:
        return None
    status = _col(drift, "status").map(_tier)
    df = pd.DataFrame(
        {
            "feature": _col(drift, "feature").map(_fmt_text),
            "psi": _num(drift, "psi"),
            "effect": _num(drift, "effect"),
            "status": status.to_numpy(),
            "important": _col(drift, "important", False).map(_flag).to_numpy(dtype=bool),
            "ref_mean": _num(drift, "ref_mean"),
            "cur_mean": _num(drift, "cur_mean"),
        }
    )
    severity = df["status"].map({s: i for i, s in enumerate(DRIFT_STATUSES)}).fillna(len(DRIFT_STATUSES))
    # the score first; then by status, the model's important inputs first, by how far they moved (PSI for old tables)
    df = df.assign(_score=~df["feature"].str.endswith("(score)"), _sev=severity, _imp=~df["important"],
                   _key=df["effect"].fillna(df["psi"])).sort_values(
        ["_score", "_sev", "_imp", "_key"], ascending=[True, True, True, False], kind="stable")
    counts = {s: int((df["status"] == s).sum()) for s in DRIFT_STATUSES}
    recommendation = summary.get("drift_recommendation")
    retrain = not _missing(recommendation) and bool(str(recommendation).strip())
    evidence = summary.get("drift") if isinstance(summary.get("drift"), Mapping) else {}
    shown = df.drop(columns=["_score", "_sev", "_imp", "_key"]).head(max(int(max_rows), 0))
    return {
        "rows": shown.to_dict("records"),
        "n_total": len(df),
        "counts": counts,
        "any_drift": counts["drift"] > 0,
        "retrain": retrain,
        "recommendation": str(recommendation) if retrain else "",
        "note": _fmt_text(evidence.get("message")) if not retrain else "",
        "chart": _drift_svg(shown) if len(shown) and shown["effect"].notna().any() else None,
        "min_effect": _float((evidence.get("thresholds") or {}).get("min_effect")),
    }


def _drift_svg(rows: pd.DataFrame) -> Markup:
    """Horizontal bars of effect size for the drift rows shown, coloured by status."""
    rows = rows.iloc[::-1]
    colours = {"drift": RISK_COLOURS["high"], "warning": RISK_COLOURS["medium"], "stable": RISK_COLOURS["low"]}
    chart = _hbars(rows["effect"].fillna(0.0), [str(f) for f in rows["feature"]],
                   [colours.get(s, _OTHER_COLOUR) for s in rows["status"]], 0.7 + 0.26 * len(rows),
                   "Effect size (Wasserstein / reference sd, or total variation)")
    return chart.svg("Effect size of the largest drifts")


def _estimate_section(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Label-free performance estimate of this run (see inference.estimate), if the run computed one."""
    est = summary.get("performance_estimate")
    if not isinstance(est, Mapping):
        return None
    rows = []
    for key, label, fmt in (("roc_auc", "Expected ROC-AUC", "num"), ("precision_at_alert", "Precision of alerts", "pct"),
                            ("churners_in_alerts", "Churners among alerts", "int")):
        cell = est.get(key) or {}
        rows.append({"label": label, "fmt": fmt, "estimate": _float(cell.get("estimate")),
                     "low": _float(cell.get("low")), "high": _float(cell.get("high"))})
    from inference.estimate import describe_recalibration

    return {"rows": rows, "level": _float(est.get("level")), "n_alerts": est.get("n_alerts"),
            "note": describe_recalibration(dict(est))}


def _playbook_section(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    """Per playbook: alerts, treated (contacted, not control), control, not selected, value at risk, net value."""
    if not len(alerts):
        return []
    name = _col(alerts, "playbook_name").map(_fmt_text)
    pid = _col(alerts, "playbook_id").map(_fmt_text)
    key = name.where(name != "", pid).replace("", "(no playbook)")
    control = _col(alerts, "control_group", False).map(_flag)
    has_selected = "selected" in alerts.columns
    selected = _col(alerts, "selected").map(_flag) if has_selected else ~control
    df = pd.DataFrame(
        {
            "playbook": key.to_numpy(),
            "channel": _col(alerts, "playbook_channel").map(_fmt_text).to_numpy(),
            "control": control.to_numpy(dtype=bool),
            "contacted": (selected & ~control).to_numpy(dtype=bool),
            "selected": selected.to_numpy(dtype=bool),
            "var": _num(alerts, "value_at_risk").to_numpy(),
            "env": _num(alerts, "expected_net_value").to_numpy(),
        }
    )
    var_total = df["var"].sum()
    rows = []
    for pb, g in df.groupby("playbook", sort=False):
        rows.append(
            {
                "playbook": pb,
                "channel": ", ".join(sorted({c for c in g["channel"] if c})),
                "n": len(g),
                "treated": int(g["contacted"].sum()),  # contacted and not control (not every non-control alert)
                "control": int(g["control"].sum()),
                "not_selected": int((~g["selected"]).sum()) if has_selected else None,
                "value_at_risk": g["var"].sum(min_count=1),
                "expected_net_value": g["env"].sum(min_count=1),
                "var_share": float(g["var"].sum() / var_total) if var_total > 0 else 0.0,
            }
        )
    rows.sort(
        key=lambda r: (-(r["value_at_risk"] if _float(r["value_at_risk"]) is not None else 0.0), -r["n"])
    )
    return rows
