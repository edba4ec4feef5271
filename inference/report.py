"""Self-contained HTML report for retention analysts.

One file that opens offline: inline CSS, charts as inline SVG (matplotlib) or HTML/CSS bars, no
scripts and no network resources (a Content-Security-Policy meta tag blocks any that slip in).
All data reaches the page through Jinja2 with autoescaping on, so customer data cannot inject markup.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from churn.io import write_text

logger = logging.getLogger(__name__)

RISK_TIERS = ("high", "medium", "low")
VALUE_TIERS = ("platinum", "gold", "silver", "bronze")
RISK_COLOURS = {"high": "#c0392b", "medium": "#e08e0b", "low": "#2e8b57"}
DRIFT_STATUSES = ("drift", "warning", "stable")
_OTHER_COLOUR = "#7f8c8d"
_TEMPLATE = "report.html.j2"
_MAX_IMPORTANCE_BARS = 20
_MAX_DRIFT_ROWS = 60


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
) -> Path:
    """Render the analyst report to ``path`` (written atomically) and return the path."""
    summary = dict(summary or {})
    scores = scores if scores is not None else pd.DataFrame()
    alerts = _sorted_alerts(alerts if alerts is not None else pd.DataFrame())
    impact_scale = _impact_scale(alerts)

    context = {
        "header": _header(summary),
        "kpis": _kpis(summary, scores, alerts),
        "metrics": _metrics(summary),
        "risk": _risk_section(scores),
        "value": _value_section(scores),
        "alerts": _alert_rows(alerts.head(max(int(top_n), 0))),
        "n_alerts_total": len(alerts),
        "top_n": int(top_n),
        "explanations": _explanations(alerts.head(max(int(explain_top), 0)), impact_scale),
        "importance": _importance_section(global_importance),
        "drift": _drift_section(drift, summary),
        "playbooks": _playbook_section(alerts),
        "decisions": summary.get("decisions"),
    }
    html = _environment().get_template(_TEMPLATE).render(**context)
    out = write_text(path, html)
    logger.info(
        "wrote report %s (%d alerts, %d scored, %.0f kB)", out, len(alerts), len(scores), len(html) / 1e3
    )
    return out


# --------------------------------------------------------------------------- template and formatting


def _environment() -> jinja2.Environment:
    """Jinja2 environment reading the packaged template, autoescaping everything."""
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
        money=_fmt_money,
        compact=_fmt_compact,
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


def _fmt_money(x: Any) -> str:
    f = _float(x)
    return "—" if f is None else f"{f:,.2f}"


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
    return "—" if f is None else f"{f:+.1f} pp"


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


# --------------------------------------------------------------------------- SVG charts


def _svg(fig: Figure, label: str) -> Markup:
    """Serialise a figure to an inline ``<svg>`` element: no XML header, metadata or namespaces."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.find("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)

    def _root(m: re.Match[str]) -> str:
        # HTML5 parsers put inline <svg> in the SVG namespace themselves; dropping the xmlns URLs
        # keeps the document free of any http(s) string. Fixed size attributes go so CSS can scale it.
        tag = re.sub(r'\s(?:xmlns(?::\w+)?|width|height)="[^"]*"', "", m.group(0))
        return tag[:-1] + f' class="chart" role="img" aria-label="{_attr(label)}">'

    return Markup(re.sub(r"<svg\b[^>]*>", _root, svg, count=1))


def _attr(text: str) -> str:
    return str(Markup.escape(text))


def _plain(text: str) -> str:
    """Escape ``$`` so matplotlib shows the text literally instead of parsing mathtext."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.patch.set_alpha(0.0)
    return fig


def _style_axes(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa5b1")
    ax.tick_params(colors="#3e4c59", labelsize=9)
    ax.grid(axis="x" if ax.get_xlabel() == "" else "y", color="#e4e7eb", linewidth=0.6)
    ax.set_axisbelow(True)


def _rc() -> Any:
    """Temporary rcParams for deterministic, compact SVG (text kept as text, stable ids)."""
    return matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "churn-report", "font.size": 9, "axes.titlesize": 10}
    )


def _histogram_svg(prob: pd.Series, tier: pd.Series) -> Markup | None:
    """Stacked histogram of churn probability, coloured by risk tier."""
    mask = prob.notna()
    if not mask.any():
        return None
    p, t = prob[mask].clip(0.0, 1.0), tier[mask]
    bins = np.linspace(0.0, 1.0, 21)
    tiers = _ordered(t.unique(), RISK_TIERS)
    with _rc():
        fig = _figure(7.5, 2.6)
        ax = fig.add_subplot()
        ax.hist(
            [p[t == k].to_numpy() for k in tiers],
            bins=bins,
            stacked=True,
            color=[RISK_COLOURS.get(k, _OTHER_COLOUR) for k in tiers],
            label=[_plain(k) for k in tiers],
            edgecolor="white",
            linewidth=0.6,
        )
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_xlabel("Churn probability")
        ax.set_ylabel("Customers")
        ax.legend(frameon=False, fontsize=8, title="Risk tier", title_fontsize=8)
        _style_axes(ax)
        return _svg(fig, "Histogram of churn probability by risk tier")


def _importance_svg(imp: pd.DataFrame) -> Markup:
    """Horizontal bars of mean |impact| per feature group, coloured by family."""
    families = list(dict.fromkeys(imp["family"]))
    imp = imp.iloc[::-1]  # largest at the top
    palette = matplotlib.colormaps["tab10"]
    colour = {f: palette(i % 10) for i, f in enumerate(families)}
    with _rc():
        fig = _figure(7.5, 0.8 + 0.28 * len(imp))
        ax = fig.add_subplot()
        y = np.arange(len(imp))
        ax.barh(y, imp["mean_abs_impact"], color=[colour[f] for f in imp["family"]], height=0.7)
        ax.set_yticks(y, labels=list(imp["group"]), parse_math=False)
        ax.set_xlabel("Mean |impact| (probability points)")
        if len(families) > 1:
            handles = [Patch(color=colour[f], label=_plain(f)) for f in families]
            ax.legend(
                handles=handles,
                frameon=False,
                fontsize=8,
                title="Family",
                title_fontsize=8,
                loc="lower right",
            )
        _style_axes(ax)
        return _svg(fig, "Global feature-group importance")


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
            "note": _share_note(n_alerts, n_scored, "of scored"),
        },
        {
            "label": "High risk",
            "value": _fmt_pct(share_high),
            "note": f"{n_high:,} customers",
            "tone": "high",
        },
        {
            "label": "Value at risk (all)",
            "value": _fmt_compact(var_total),
            "note": "across all scored customers",
        },
        {
            "label": "Value at risk in alerts",
            "value": _fmt_compact(var_alerts),
            "note": _share_note(var_alerts, var_total, "of total"),
        },
    ]
    budget = _float(summary.get("budget"))
    if budget is not None:
        cards.append({"label": "Budget", "value": _fmt_compact(budget), "note": ""})
    if "expected_net_value" in alerts.columns:
        env = _num(alerts, "expected_net_value")[selected & ~control].sum(min_count=1)
        note = "contacted customers" if has_selected else "treated alerts"
        cards.append(
            {"label": "Expected net value", "value": _fmt_compact(env), "note": note, "tone": "good"}
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
    vts, rts = _ordered(vt.unique(), VALUE_TIERS), _ordered(rt.unique(), RISK_TIERS)
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


def _alert_rows(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for i, rec in enumerate(alerts.to_dict("records")):
        reasons = [t for t in (_fmt_text(rec.get(f"reason_{k}")).strip() for k in (1, 2, 3)) if t]
        control = _flag(rec.get("control_group"))
        if control:
            action = "control"
        elif "selected" not in rec:
            action = "alert"
        else:
            action = "contact" if _flag(rec.get("selected")) else "not_selected"
        rank = _float(rec.get("rank"))
        rows.append(
            {
                "rank": int(rank) if rank is not None else i + 1,
                "customer_id": _fmt_text(rec.get("customer_id")) or "—",
                "probability": rec.get("churn_probability"),
                "risk_tier": _tier(rec.get("risk_tier")),
                "value_tier": _tier(rec.get("value_tier")),
                "lifecycle_stage": _fmt_text(rec.get("lifecycle_stage")),
                "lifetime_value": rec.get("lifetime_value"),
                "value_at_risk": rec.get("value_at_risk"),
                "expected_net_value": rec.get("expected_net_value"),
                "reasons": reasons,
                "protective": _fmt_text(rec.get("protective_reason")).strip(),
                "playbook_name": _fmt_text(rec.get("playbook_name")) or _fmt_text(rec.get("playbook_id")),
                "playbook_action": _fmt_text(rec.get("playbook_action")),
                "playbook_channel": _fmt_text(rec.get("playbook_channel")),
                "playbook_owner": _fmt_text(rec.get("playbook_owner")),
                "playbook_rule": _fmt_text(rec.get("playbook_rule")),
                "action": action,
            }
        )
    return rows


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


def _drift_section(drift: pd.DataFrame | None, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    if drift is None:
        return None
    status = _col(drift, "status").map(_tier)
    df = pd.DataFrame(
        {
            "feature": _col(drift, "feature").map(_fmt_text),
            "psi": _num(drift, "psi"),
            "status": status.to_numpy(),
            "ref_mean": _num(drift, "ref_mean"),
            "cur_mean": _num(drift, "cur_mean"),
        }
    )
    severity = df["status"].map({s: i for i, s in enumerate(DRIFT_STATUSES)}).fillna(len(DRIFT_STATUSES))
    df = df.assign(_sev=severity).sort_values(["_sev", "psi"], ascending=[True, False], kind="stable")
    counts = {s: int((df["status"] == s).sum()) for s in DRIFT_STATUSES}
    recommendation = summary.get("drift_recommendation")
    if _missing(recommendation) or not str(recommendation).strip():
        recommendation = (
            f"{counts['drift']} feature(s) drifted beyond the PSI threshold: retrain the model on recent data "
            "and re-validate calibration before relying on these probabilities."
        )
    rows = df.drop(columns="_sev").head(_MAX_DRIFT_ROWS).to_dict("records")
    return {
        "rows": rows,
        "n_total": len(df),
        "counts": counts,
        "any_drift": counts["drift"] > 0,
        "recommendation": str(recommendation),
    }


def _playbook_section(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    """Per playbook: alerts, treated, control, contacted, value at risk and expected net value."""
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
                "treated": int((~g["control"]).sum()),
                "control": int(g["control"].sum()),
                "contacted": int(g["contacted"].sum()) if has_selected else None,
                "value_at_risk": g["var"].sum(min_count=1),
                "expected_net_value": g["env"].sum(min_count=1),
                "var_share": float(g["var"].sum() / var_total) if var_total > 0 else 0.0,
            }
        )
    rows.sort(
        key=lambda r: (-(r["value_at_risk"] if _float(r["value_at_risk"]) is not None else 0.0), -r["n"])
    )
    return rows
