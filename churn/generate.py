"""Seeded, vectorised generator of realistic demo data for the churn early-warning system.

Five tables come out: ``customers``, ``events``, ``transactions``, ``interactions`` and ``treatments`` (past
campaigns). Churn is driven by a latent mechanism the tables never expose directly, so a model has to earn
its accuracy:

* five latent segments (power, steady, price-sensitive, casual, new-and-unsure) differ in plan mix, add-on
  spend, engagement, satisfaction and baseline churn hazard; the segment is not a column;
* each month a customer's latent satisfaction random-walks around a personal mean, with billing-problem and
  outage shocks; the monthly churn hazard combines segment, tenure, plan, channel, region, satisfaction,
  seasonality, a price rise, an unobserved frailty and noise;
* about half the churners fade out over their last 1-3 months (fewer events, shorter sessions, fewer
  purchases), about a third (overlapping) complain increasingly angrily before leaving, the rest leave
  abruptly; loyal customers also have engagement dips, satisfaction shocks and chronic complaints;
* monthly retention campaigns (the 9 months before the last) contact a large share of the base, more often
  the riskier customers (P = 0.25 + 8 x monthly risk, at most 0.8), with the playbook a retention team's
  rules pick from what it sees (:func:`rule_playbook`: billing problem, complaints, new, low usage,
  price-sensitive, else the automated check-in) and, for 30 % of contacts, a random playbook (an A/B arm,
  so every playbook has evidence), and a randomized 30 % control group. The contact shifts that month's
  churn hazard by a heterogeneous effect (:func:`contact_effect`) shaped on the field evidence (Ascarza
  2018, "Retention futility"; Ascarza, Iyengar & Schleicher 2016): persuadables (moderately unhappy, new,
  price-sensitive, a billing problem) respond to the playbook that fits them; sure things (very satisfied)
  and lost causes (very unhappy, satisfaction below -0.8: they concentrate at the top of the risk ranking)
  do not respond; sleeping dogs (:func:`dormant`: over 9 months' tenure and low usage) churn more when
  contacted, whatever their satisfaction, and are somewhat riskier anyway (+0.5 log-odds: a forgotten
  subscription gets noticed), so a churn model ranks them high. The effects are tied to observable traits
  (tenure, event volume, complaint tone and ratings, billing complaints, plan, channel), but satisfaction is
  only seen through noisy, sparse signals: a model can learn them, not trivially. The campaigns have their
  own random stream, so never-contacted customers churn on exactly the same day as without campaigns. The
  true effect at the end is kept apart (:func:`simulate_demo`).

Customer-months are simulated as arrays (a loop over months only); events are expanded with ``np.repeat``
and placed in time with sorted uniform spacings mapped through an hour-of-day/day-of-week intensity, so no
sort of the event table is needed and millions of customers fit in memory.

Dtypes: ids and labels are pandas ``str``; ``events.event_type`` is ``category`` (memory); every timestamp
and date column is ``datetime64[us]``. Dates (``signup_date``, ``churn_date``) are midnights. A churned
customer's last record is strictly before ``churn_date``; activity of non-churners runs to the end of the
``end`` day. Records start at ``max(signup_date, start)``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from churn import io
from churn.demo_texts import CATEGORIES, text_bank
from churn.timebase import DAYS_PER_MONTH, SECONDS_PER_DAY

logger = logging.getLogger(__name__)

TABLES: tuple[str, ...] = ("customers", "events", "transactions", "interactions", "treatments")
PLANS: tuple[str, ...] = ("basic", "standard", "premium")
CHANNELS: tuple[str, ...] = ("web", "app", "partner", "store")
REGIONS: tuple[str, ...] = ("na_east", "na_west", "europe", "apac", "latam")
EVENT_TYPES: tuple[str, ...] = ("login", "session", "feature_use", "content_share", "support_view")
CONTACT_CHANNELS: tuple[str, ...] = ("email", "chat", "phone", "review", "app_store")


# ---- latent segments: power, steady, price_sensitive, casual, new_unsure --------------------------------
_SEG_MIX_BASE = np.array([0.18, 0.40, 0.20, 0.17, 0.05])  # customers already there at `start` (survivors)
_SEG_MIX_NEW = np.array([0.10, 0.24, 0.22, 0.24, 0.20])  # customers arriving during the window
_SEG_PLAN = np.array([[0.10, 0.35, 0.55], [0.25, 0.50, 0.25], [0.70, 0.25, 0.05], [0.55, 0.35, 0.10],
                      [0.45, 0.40, 0.15]])
_SEG_CHANNEL = np.array([[0.35, 0.45, 0.05, 0.15], [0.40, 0.30, 0.10, 0.20], [0.35, 0.25, 0.30, 0.10],
                         [0.30, 0.25, 0.30, 0.15], [0.30, 0.40, 0.20, 0.10]])
_SEG_ENGAGEMENT = np.array([2.0, 1.0, 0.85, 0.35, 0.75])  # relative event intensity
_SEG_ADDON = np.array([0.55, 0.22, 0.06, 0.05, 0.12])  # add-on purchases per month
_SEG_ADDON_PRICE = np.array([[0.05, 0.10, 0.20, 0.25, 0.20, 0.20],  # P(price point) per segment
                             [0.15, 0.20, 0.30, 0.20, 0.10, 0.05], [0.45, 0.30, 0.20, 0.05, 0.00, 0.00],
                             [0.35, 0.30, 0.25, 0.10, 0.00, 0.00], [0.25, 0.25, 0.25, 0.15, 0.10, 0.00]])
_ADDON_PRICES = np.array([1.99, 2.99, 4.99, 7.99, 9.99, 14.99])
_SEG_HAZARD = np.array([-4.3, -3.8, -3.2, -3.0, -2.9])  # baseline monthly churn log-odds
_SEG_SAT_MEAN = np.array([0.6, 0.35, -0.05, 0.05, -0.1])
_SEG_SAT_SD = np.array([0.25, 0.30, 0.40, 0.35, 0.45])  # month-to-month satisfaction innovations
_SEG_SESSION_MIN = np.array([28.0, 18.0, 15.0, 9.0, 12.0])  # median session minutes
_SEG_CONTACT = np.array([0.08, 0.06, 0.10, 0.03, 0.08])  # interactions per month at average satisfaction
_SEG_EVENT_MIX = np.array([[0.30, 0.34, 0.24, 0.12], [0.38, 0.34, 0.20, 0.08], [0.40, 0.33, 0.19, 0.08],
                           [0.50, 0.32, 0.12, 0.06], [0.42, 0.30, 0.22, 0.06]])  # login/session/feature/share

_PLAN_PRICE = np.array([9.99, 15.99, 24.99])
_PLAN_HAZARD = np.array([0.15, 0.0, -0.2])
_CHANNEL_HAZARD = np.array([0.0, -0.1, 0.35, -0.15])
_REGION_P = np.array([0.28, 0.22, 0.25, 0.15, 0.10])
_REGION_HAZARD = np.array([0.0, 0.0, -0.05, 0.05, 0.15])
_REGION_PRICE = np.array([1.0, 1.0, 1.0, 0.9, 0.8])
_REGION_ZH = np.array([0.01, 0.01, 0.01, 0.55, 0.01])  # share of customers writing in Chinese

_SAT_RHO = 0.8
# Month-of-year effects (index 0 = January): churn peaks in January and summer; engagement dips in summer.
_SEASON_HAZARD = np.array([0.35, 0.1, 0.0, 0.0, 0.0, 0.1, 0.25, 0.25, 0.0, 0.0, -0.05, -0.15])
_SEASON_ENGAGEMENT = np.array([1.05, 1.0, 1.0, 0.97, 0.95, 0.92, 0.88, 0.88, 0.97, 1.0, 1.05, 1.12])
_HOUR_PROFILE = np.array([0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.60, 0.80, 0.85, 0.85, 0.90, 0.95, 0.90,
                          0.85, 0.85, 0.90, 1.00, 1.20, 1.40, 1.50, 1.35, 0.95, 0.55])
_DOW_PROFILE = np.array([0.95, 0.95, 0.97, 1.0, 1.05, 1.15, 1.10])  # Monday first

# Interaction tone thresholds on the noisy satisfaction signal (angry < annoyed < neutral < positive).
_TONE_CUTS = np.array([-1.6, -0.75, 0.2])
_TONE_CATEGORY = np.array([  # P(category | tone), categories as in demo_texts.CATEGORIES
    [0.35, 0.35, 0.18, 0.07, 0.00, 0.05],
    [0.28, 0.32, 0.10, 0.18, 0.00, 0.12],
    [0.22, 0.24, 0.06, 0.20, 0.03, 0.25],
    [0.05, 0.07, 0.00, 0.28, 0.55, 0.05],
])
_TONE_CONTACT = np.array([  # P(contact channel | tone)
    [0.30, 0.20, 0.30, 0.10, 0.10],
    [0.30, 0.35, 0.20, 0.05, 0.10],
    [0.35, 0.40, 0.15, 0.05, 0.05],
    [0.10, 0.20, 0.05, 0.35, 0.30],
])
_SRC_BASE, _SRC_BILLING, _SRC_OUTAGE, _SRC_CHURN = range(4)

# ---- past retention campaigns (configs/playbooks.yaml ids) ------------------------------------------------
# Contacts change the month's churn log-odds by an amount that depends on the customer's state at contact
# (Ascarza 2018, "Retention futility"): persuadables (moderately unhappy, new, price-sensitive) respond to the
# playbook that fits them; sure things (very satisfied) and lost causes (very unhappy: the top of the risk
# ranking) do not respond; "sleeping dogs" (long-tenured customers who barely use the product, who look risky
# to a churn model and are somewhat riskier) are reminded of a subscription they had forgotten and churn MORE.
PLAYBOOK_IDS: tuple[str, ...] = ("exec-review", "cs-call", "support-escalation", "billing-review", "onboarding-help",
                                 "survey-followup", "winback-discount", "reengage-nudge", "auto-checkin")
_N_CAMPAIGNS = 9           # monthly campaigns, the months before the last one
_CAMPAIGN_CONTROL = 0.3    # randomized hold-out share
_CAMPAIGN_REACH = (0.25, 8.0)  # P(contacted) = 0.25 + 8 x monthly churn risk (at most 0.8): risk-led
_CAMPAIGN_EXPLORE = 0.3    # share of contacts given a uniformly random playbook (the rest: the rule's playbook)
_UNHAPPY = np.array([-1.4, -0.9, -1.6, -1.0, -0.2, -0.4, -0.5, -0.1, -0.1])
_NEW = np.array([-0.6, -0.8, -0.2, -0.1, -1.6, -0.1, -0.2, -0.5, -0.3])
_SLEEPING = np.array([0.4, 0.4, 0.2, 0.3, 0.2, 0.9, 0.8, 0.6, 1.0])
_BILLING = np.array([0.0, 0.0, -0.2, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0])     # on top of unhappy
_PRICE_SENSITIVE = np.array([0.0, 0.0, 0.0, -0.3, 0.0, 0.0, -0.9, 0.0, 0.0])
_UNHAPPY_AT, _LOST_AT, _SURE_AT = -0.2, -0.8, 0.8  # satisfaction thresholds: unhappy, lost cause, sure thing
_DORMANT_HAZARD = 0.5      # a dormant long-tenured subscriber is somewhat likelier to notice and cancel
TRUTH_FILE = "_truth/treatment_effects.parquet"


def generate_demo(
    n_customers: int = 10_000,
    seed: int = 42,
    start: str = "2024-01-01",
    end: str = "2025-12-31",
    events_per_month: float = 20.0,
) -> dict[str, pd.DataFrame]:
    """Simulate the demo tables (:data:`TABLES`) for ``n_customers`` over the days ``start``..``end`` (inclusive).

    ``events_per_month`` is roughly the mean number of events per active customer-month. The same arguments
    always give identical frames; tables are sorted by customer_id then timestamp with a fresh index.
    """
    return simulate_demo(n_customers, seed, start, end, events_per_month)[0]


def simulate_demo(
    n_customers: int = 10_000,
    seed: int = 42,
    start: str = "2024-01-01",
    end: str = "2025-12-31",
    events_per_month: float = 20.0,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """:func:`generate_demo`'s tables and the ground truth the pipeline never sees.

    The truth has one row per customer active at the day after ``end`` and per playbook: ``customer_id``,
    ``playbook_id``, ``true_effect`` (change in 30-day churn probability if contacted then; negative =
    retained). Write it with ``write_demo(..., truth=...)`` to ``_truth/treatment_effects.parquet``.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be >= 1, got {n_customers}")
    if events_per_month <= 0:
        raise ValueError(f"events_per_month must be > 0, got {events_per_month}")
    start_day = _to_day(start)
    end_day = _to_day(end)
    if end_day <= start_day:
        raise ValueError(f"end ({end}) must be after start ({start})")

    t0 = time.perf_counter()
    # the campaign stream is the 6th child: the first five are what spawn(5) gave before campaigns existed
    rng_cust, rng_month, rng_event, rng_txn, rng_int, rng_camp = np.random.default_rng(seed).spawn(6)
    cal = _calendar(start_day, end_day)
    cust = _simulate_customers(n_customers, cal, rng_cust)
    campaigns = _Campaigns(cal, rng_camp)
    months = _simulate_months(cust, cal, rng_month, campaigns)
    ids = _customer_ids(n_customers)
    tables = {
        "customers": _customers_frame(cust, ids, cal),
        "events": _events(cust, months, cal, events_per_month, ids, rng_event),
        "transactions": _transactions(cust, months, cal, ids, rng_txn),
        "interactions": _interactions(cust, months, cal, ids, rng_int),
        "treatments": campaigns.frame(ids, cust["churn_rel"]),
    }
    churned = int((cust["churn_rel"] < cal["n_days"]).sum())
    logger.info(
        "generated %d customers (%d churned), %d events, %d transactions, %d interactions in %.1f s",
        n_customers, churned, len(tables["events"]), len(tables["transactions"]),
        len(tables["interactions"]), time.perf_counter() - t0,
    )
    return tables, _truth_effects(cust, months, cal, ids)


def write_demo(tables: dict[str, pd.DataFrame], out_dir: str | Path, fmt: str = "parquet",
               truth: pd.DataFrame | None = None) -> list[Path]:
    """Write each demo table to ``out_dir/<table>.<fmt>`` atomically; return the paths written.

    ``truth`` (from :func:`simulate_demo`) goes to ``out_dir/_truth/treatment_effects.parquet``, apart from
    the inputs (not in the returned paths: it is no input).
    """
    writers = {"parquet": io.write_parquet, "csv": io.write_csv}
    if fmt not in writers:
        raise ValueError(f"fmt must be one of {sorted(writers)}, got {fmt!r}")
    missing = [t for t in TABLES if t not in tables and t != "treatments"]  # campaign history is optional
    if missing:
        raise ValueError(f"tables missing: {missing}")
    out = Path(out_dir)
    paths = [writers[fmt](out / f"{name}.{fmt}", tables[name]) for name in TABLES if name in tables]
    if truth is not None:
        io.write_parquet(out / TRUTH_FILE, truth)
    logger.info("wrote %d demo tables to %s", len(paths), out)
    return paths


# ---- calendar and customers ------------------------------------------------------------------------------


def _to_day(value: str) -> np.datetime64:
    return np.datetime64(pd.Timestamp(value).date(), "D")


def _calendar(start_day: np.datetime64, end_day: np.datetime64) -> dict[str, Any]:
    """Month bounds (days since ``start``), month-of-year and the cumulative hourly activity intensity."""
    n_days = int((end_day - start_day).astype(int)) + 1
    month_starts = np.arange(start_day.astype("M8[M]"), end_day.astype("M8[M]") + 1).astype("M8[D]")
    bounds = np.concatenate([[0], (month_starts[1:] - start_day).astype(np.int64), [n_days]])
    month_of_year = month_starts.astype("M8[M]").astype(np.int64) % 12
    day_index = np.arange(n_days) + start_day.astype(np.int64)
    dow = (day_index + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hourly = (_DOW_PROFILE[dow][:, None] * _HOUR_PROFILE[None, :]).ravel()
    return {
        "start_day": start_day,
        "start_sec": int(start_day.astype("M8[s]").astype(np.int64)),
        "n_days": n_days,
        "bounds": bounds,
        "n_months": len(bounds) - 1,
        "month_of_year": month_of_year,
        "month_days": ((month_starts.astype("M8[M]") + 1).astype("M8[D]") - month_starts).astype(np.int64),
        "hourly": hourly,
        "cum_hourly": np.concatenate([[0.0], np.cumsum(hourly)]),
        # The price rise lands one year in, if the window is that long.
        "price_rise_month": 12 if len(bounds) - 1 > 12 else -1,
    }


def _pick(rng: np.random.Generator, probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Draw one category per row from ``probs[groups[row]]`` (rows of ``probs`` are distributions)."""
    cum = np.cumsum(probs, axis=1).astype(np.float32)
    u = rng.random(len(groups), dtype=np.float32)
    out = np.zeros(len(groups), dtype=np.int8)
    for k in range(probs.shape[1] - 1):  # loop over a handful of categories, not rows
        out += u >= cum[:, k][groups]
    return out


def _simulate_customers(n: int, cal: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Static customer attributes, observable and latent."""
    n_days = cal["n_days"]
    n_base = int(round(0.4 * n))
    # Initial base: tenure up to ~3 years, more recent sign-ups more common among survivors.
    base_signup = -(1 + np.floor(1095 * rng.random(n_base) ** 1.6)).astype(np.int64)
    # Arrivals over the window with mild growth (density proportional to 1 + g*x).
    g = 0.5
    x = (-1 + np.sqrt(1 + 2 * g * (1 + g / 2) * rng.random(n - n_base))) / g
    new_signup = np.minimum(np.floor(x * n_days), n_days - 1).astype(np.int64)
    signup_rel = np.concatenate([base_signup, new_signup])
    is_base = np.concatenate([np.ones(n_base, bool), np.zeros(n - n_base, bool)])
    order = np.argsort(signup_rel, kind="stable")  # ids follow sign-up order
    signup_rel, is_base = signup_rel[order], is_base[order]

    seg = np.where(is_base, _pick(rng, _SEG_MIX_BASE[None], np.zeros(n, np.int8)),
                   _pick(rng, _SEG_MIX_NEW[None], np.zeros(n, np.int8))).astype(np.int8)
    plan = _pick(rng, _SEG_PLAN, seg)
    channel = _pick(rng, _SEG_CHANNEL, seg)
    region = _pick(rng, _REGION_P[None], np.zeros(n, np.int8))
    zh = rng.random(n) < _REGION_ZH[region]

    # Pricing quirks: legacy price, partner discount, regional price, intro promo, free first month.
    list_price = _PLAN_PRICE[plan] * _REGION_PRICE[region]
    legacy = rng.random(n) < 0.08
    list_price = np.where(legacy, list_price - 1.0, list_price)
    list_price = np.where(channel == 2, list_price * 0.85, list_price)
    promo = (~is_base) & (rng.random(n) < np.where(seg == 2, 0.5, 0.15))
    free_first = (channel == 2) & (rng.random(n) < 0.3)

    # Churn styles, used only if the customer churns: fade (~1/2) and complain (~1/3) overlap.
    fade = rng.random(n) < 0.5
    complain = rng.random(n) < 0.33
    return {
        "n": np.int64(n),
        "signup_rel": signup_rel,
        "is_base": is_base,
        "seg": seg,
        "plan": plan,
        "channel": channel,
        "region": region,
        "zh": zh,
        "list_price": list_price,
        "legacy": legacy,
        "promo": promo,
        "free_first": free_first,
        "engagement": (_SEG_ENGAGEMENT[seg] * rng.lognormal(0.0, 0.45, n)).astype(np.float32),
        "addon_rate": (_SEG_ADDON[seg] * rng.lognormal(0.0, 0.6, n)).astype(np.float32),
        "sat_mean": (_SEG_SAT_MEAN[seg] + rng.normal(0.0, 0.45, n)).astype(np.float32),
        "frailty": rng.normal(0.0, 0.5, n).astype(np.float32),
        "chronic": rng.random(n) < 0.04,  # complain a lot, churn no more than others
        "fade": fade,
        "fade_lead": rng.uniform(30, 90, n).astype(np.float32),
        "fade_floor": rng.uniform(0.03, 0.4, n).astype(np.float32),
        "complain": complain,
        "complain_lead": rng.uniform(15, 75, n).astype(np.float32),
    }


def _simulate_months(cust: dict[str, np.ndarray], cal: dict[str, Any], rng: np.random.Generator,
                     campaigns: _Campaigns | None = None) -> dict[str, np.ndarray]:
    """Satisfaction, shocks, dips and churn month by month; sets ``cust['churn_rel']`` (n_days if none)."""
    n, n_months, bounds = int(cust["n"]), cal["n_months"], cal["bounds"]
    signup = cust["signup_rel"]
    seg = cust["seg"]
    sat_sd = _SEG_SAT_SD[seg].astype(np.float32)
    sat = np.empty((n, n_months), np.float32)
    billing = np.zeros((n, n_months), bool)
    outage = np.zeros((n, n_months), bool)
    outage_months = set(rng.choice(n_months, size=min(3, n_months), replace=False).tolist())
    static_logit = (_SEG_HAZARD[seg] + _PLAN_HAZARD[cust["plan"]] + _CHANNEL_HAZARD[cust["channel"]]
                    + _REGION_HAZARD[cust["region"]] + cust["frailty"]).astype(np.float32)
    churn_rel = np.full(n, cal["n_days"], np.int64)
    alive = np.ones(n, bool)
    s = cust["sat_mean"] + rng.normal(0, 1, n).astype(np.float32) * sat_sd / np.sqrt(1 - _SAT_RHO**2)
    for m in range(n_months):
        lo_m, hi_m = bounds[m], bounds[m + 1]
        billing[:, m] = rng.random(n) < 0.02
        if m in outage_months:
            outage[:, m] = rng.random(n) < 0.35
        s = (cust["sat_mean"] + _SAT_RHO * (s - cust["sat_mean"]) + rng.normal(0, 1, n).astype(np.float32) * sat_sd
             - 1.0 * billing[:, m] - 0.7 * outage[:, m])
        sat[:, m] = s
        tenure = np.maximum((lo_m + hi_m) / 2 - signup, 0) / DAYS_PER_MONTH
        logit = (static_logit - 0.9 * s + 1.0 * np.exp(-tenure / 3) + 0.6 * (seg == 4) * np.exp(-tenure / 4)
                 + _DORMANT_HAZARD * dormant(cust, tenure) + _SEASON_HAZARD[cal["month_of_year"][m]]
                 + rng.normal(0, 0.3, n))
        if m == cal["price_rise_month"] or m == cal["price_rise_month"] + 1:
            logit += np.where(seg == 2, 0.7, 0.2) * (1.0 if m == cal["price_rise_month"] else 0.5)
        if campaigns is not None:
            logit = logit + campaigns.contact(m, cust, {"sat": sat, "billing": billing}, logit, tenure, alive)
        first = np.maximum(lo_m, signup)
        frac = np.clip((hi_m - first) / cal["month_days"][m], 0, 1)
        p = 1 - (1 - 1 / (1 + np.exp(-logit))) ** frac
        # Churn day: strictly after sign-up, inside this month.
        day_lo = np.maximum(lo_m, signup + 1)
        can = alive & (signup < hi_m) & (day_lo <= hi_m - 1)
        now = can & (rng.random(n) < p)
        day = day_lo + np.floor(rng.random(n) * (hi_m - day_lo)).astype(np.int64)
        churn_rel[now] = day[now]
        alive &= ~now
    cust["churn_rel"] = churn_rel

    # Active days of each customer-month: [a, b) in days since start.
    a = np.maximum(bounds[None, :-1], signup[:, None])
    b = np.minimum(bounds[None, 1:], churn_rel[:, None])
    active_days = np.clip(b - a, 0, None).astype(np.int32)
    month_len = cal["month_days"].astype(np.float32)
    # Engagement dips that are not churn (holidays, busy spells): false alarms for a model.
    dip = np.where(rng.random((n, n_months)) < 0.06, rng.uniform(0.15, 0.6, (n, n_months)), 1.0).astype(np.float32)
    months_since_signup = np.maximum(bounds[None, :-1] - signup[:, None], 0) / DAYS_PER_MONTH
    return {
        "sat": sat,
        "static_logit": static_logit,
        "billing": billing,
        "outage": outage,
        "a": a.astype(np.int32),
        "active_days": active_days,
        "frac": (active_days / month_len[None, :]).astype(np.float32),
        "dip": dip,
        "months_since_signup": months_since_signup.astype(np.float32),
    }


# ---- past retention campaigns ------------------------------------------------------------------------------


def dormant(cust: dict[str, np.ndarray], tenure: np.ndarray) -> np.ndarray:
    """Long-tenured (over 9 months) customers who barely use the product: the would-be sleeping dogs."""
    return (cust["engagement"] < 0.5) & (tenure > 9)


def contact_effect(cust: dict[str, np.ndarray], s: np.ndarray, tenure: np.ndarray,
                   billing_recent: np.ndarray) -> np.ndarray:
    """Change in the month's churn log-odds if contacted, customers x :data:`PLAYBOOK_IDS`.

    Traits a model can see in the tables: satisfaction ``s`` (through complaint tone, ratings, support
    views), tenure, engagement (event volume), a recent billing problem, plan and channel.
    """
    unhappy = (s < _UNHAPPY_AT)[:, None]
    new = (tenure < 4)[:, None]
    sleeping = dormant(cust, tenure)[:, None]
    price_sensitive = ((cust["plan"] == 0) | (cust["channel"] == 2))[:, None]
    delta = (unhappy * (_UNHAPPY + billing_recent[:, None] * _BILLING + price_sensitive * _PRICE_SENSITIVE)
             + new * _NEW + sleeping * _SLEEPING)
    no_response = ((s < _LOST_AT) | (s > _SURE_AT))[:, None]  # lost causes and sure things: no response to the offer
    # ... but a forgotten subscription, once recalled, is cancelled whatever the satisfaction
    return np.where(no_response, sleeping * _SLEEPING, delta).astype(np.float32)


def rule_playbook(cust: dict[str, np.ndarray], s: np.ndarray, tenure: np.ndarray,
                  billing_recent: np.ndarray) -> np.ndarray:
    """The past campaigns' routing rule (index into :data:`PLAYBOOK_IDS`), first match wins.

    Like a retention team's rules, on what it sees: a billing problem -> billing review, complaints
    (satisfaction below -0.5) -> support escalation, new (under 4 months) -> onboarding, low usage ->
    re-engagement nudge, price-sensitive (basic plan or partner channel) -> win-back discount, else the
    automated check-in.
    """
    ix = {p: i for i, p in enumerate(PLAYBOOK_IDS)}
    conditions = [billing_recent, s < -0.5, tenure < 4, cust["engagement"] < 0.5,
                  (cust["plan"] == 0) | (cust["channel"] == 2)]
    choices = [ix["billing-review"], ix["support-escalation"], ix["onboarding-help"], ix["reengage-nudge"],
               ix["winback-discount"]]
    return np.select(conditions, choices, ix["auto-checkin"]).astype(np.int64)


class _Campaigns:
    """Monthly retention campaigns with randomized control groups, on their own random stream.

    The campaign draws never touch the month stream, so customers never contacted churn exactly as they
    would without campaigns; a contacted customer's churn draw uses the same uniform with a shifted hazard.
    """

    def __init__(self, cal: dict[str, Any], rng: np.random.Generator, n_campaigns: int | None = None) -> None:
        last = cal["n_months"] - 1  # no campaign in the final month: its outcomes would run past the data
        self.months = set(range(max(1, last - (n_campaigns or _N_CAMPAIGNS)), last))
        self.rng, self.cal = rng, cal
        self.rows: list[pd.DataFrame] = []

    def contact(self, m: int, cust: dict[str, np.ndarray], months: dict[str, np.ndarray], logit: np.ndarray,
                tenure: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Run month ``m``'s campaign (if any): record contacts and return the treated customers' log-odds shift."""
        n = len(logit)
        if m not in self.months:
            return np.zeros(n, np.float32)
        lo_m = self.cal["bounds"][m]
        eligible = alive & (cust["signup_rel"] < lo_m - 30)
        risk = 1 / (1 + np.exp(-logit))
        target = eligible & (self.rng.random(n) < np.clip(_CAMPAIGN_REACH[0] + _CAMPAIGN_REACH[1] * risk, 0, 0.8))
        billing = months["billing"][:, m] | months["billing"][:, max(m - 1, 0)]
        explore = self.rng.random(n) < _CAMPAIGN_EXPLORE
        playbook = np.where(explore, self.rng.integers(0, len(PLAYBOOK_IDS), n),
                            rule_playbook(cust, months["sat"][:, m], tenure, billing))
        control = self.rng.random(n) < _CAMPAIGN_CONTROL
        delta = contact_effect(cust, months["sat"][:, m], tenure, billing)[np.arange(n), playbook]
        who = np.flatnonzero(target)
        self.rows.append(pd.DataFrame({"cidx": who, "month": m, "playbook": playbook[who],
                                       "control": control[who]}))
        return np.where(target & ~control, delta, 0.0).astype(np.float32)

    def frame(self, ids: pa.Array, churn_rel: np.ndarray) -> pd.DataFrame:
        """The ``treatments`` table: customer_id, timestamp (campaign day 09:00), campaign_id, playbook_id, group.

        Customers who churned on the campaign day itself (before 09:00) were never reached: no row.
        """
        r = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(
            {"cidx": [], "month": [], "playbook": [], "control": []})
        r = r.sort_values(["cidx", "month"], kind="stable")
        r = r[churn_rel[r["cidx"].to_numpy(np.int64)] > self.cal["bounds"][r["month"].to_numpy(np.int64)]]
        cidx, month = r["cidx"].to_numpy(np.int64), r["month"].to_numpy(np.int64)
        day = self.cal["start_day"] + self.cal["bounds"][month]
        sec = day.astype("M8[s]").astype(np.int64) + 9 * 3600
        return pd.DataFrame({
            "customer_id": _id_column(ids, cidx),
            "timestamp": _seconds_to_ts(sec),
            "campaign_id": pd.array(np.char.add("retention-", np.datetime_as_string(day, unit="M")), dtype="str"),
            "playbook_id": pd.array(np.array(PLAYBOOK_IDS)[r["playbook"].to_numpy(np.int64)], dtype="str"),
            "group": pd.array(np.where(r["control"].to_numpy(bool), "control", "treated"), dtype="str"),
        })


def _truth_effects(cust: dict[str, np.ndarray], months: dict[str, np.ndarray], cal: dict[str, Any],
                   ids: pa.Array) -> pd.DataFrame:
    """True change in 30-day churn probability if contacted at the day after ``end``, per customer and playbook.

    For customers active at the end: the next month's hazard without its noise term, with and without the
    contact's log-odds shift, from the last month's satisfaction.
    """
    n_days, last = cal["n_days"], cal["n_months"] - 1
    who = np.flatnonzero((cust["churn_rel"] >= n_days) & (cust["signup_rel"] < n_days))
    tenure = (n_days - cust["signup_rel"]) / DAYS_PER_MONTH
    s = months["sat"][:, last]
    logit = (months["static_logit"] - 0.9 * s + 1.0 * np.exp(-tenure / 3)
             + 0.6 * (cust["seg"] == 4) * np.exp(-tenure / 4) + _DORMANT_HAZARD * dormant(cust, tenure)
             + _SEASON_HAZARD[(cal["month_of_year"][last] + 1) % 12])
    billing = months["billing"][:, last] | months["billing"][:, max(last - 1, 0)]
    delta = contact_effect(cust, s, tenure, billing)[who]
    base = 1 / (1 + np.exp(-logit[who]))
    effect = 1 / (1 + np.exp(-(logit[who][:, None] + delta))) - base[:, None]
    k = len(PLAYBOOK_IDS)
    return pd.DataFrame({"customer_id": _id_column(ids, np.repeat(who, k)),
                         "playbook_id": pd.array(np.tile(np.array(PLAYBOOK_IDS), len(who)), dtype="str"),
                         "true_effect": effect.ravel().astype(np.float64)})


# ---- helpers for expanding customer-months into rows ------------------------------------------------------


def _customer_ids(n: int) -> pa.Array:
    width = max(7, len(str(n)))
    return pa.array(np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), width)))


def _id_column(ids: pa.Array, cust_idx: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.array(ids.take(pa.array(cust_idx)), dtype="str")


def _seconds_to_ts(sec: np.ndarray) -> np.ndarray:
    return (sec.astype(np.int64) * 1_000_000).view("M8[us]")


def _fade_factor(cust: dict[str, np.ndarray], cust_idx: np.ndarray, ts_sec: np.ndarray, cal: dict[str, Any]) -> np.ndarray:
    """Engagement multiplier in (0, 1] for fading churners over their last ``fade_lead`` days, else 1."""
    out = np.ones(len(cust_idx), dtype=np.float32)
    fader = cust["fade"] & (cust["churn_rel"] < cal["n_days"])
    rows = np.flatnonzero(fader[cust_idx])
    ci = cust_idx[rows]
    churn_sec = cal["start_sec"] + cust["churn_rel"][ci] * SECONDS_PER_DAY
    days_left = ((churn_sec - ts_sec[rows]) / SECONDS_PER_DAY).astype(np.float32)
    lead, floor = cust["fade_lead"][ci], cust["fade_floor"][ci]
    out[rows] = floor + (1 - floor) * np.clip(days_left / lead, 0, 1) ** 2
    return out


def _expand_groups(counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flat group index of each row and, per row, a uniform in [0, 1) sorted within its group.

    Sorted uniforms come from normalised cumulative exponential spacings, avoiding a sort of all rows.
    """
    flat = counts.ravel()
    groups = np.flatnonzero(flat)
    c = flat[groups]
    n_rows = int(c.sum())
    gap = rng.standard_exponential(n_rows + len(groups))
    np.cumsum(gap, out=gap)
    last = np.cumsum(c + 1) - 1  # position of each group's closing spacing
    base = np.concatenate([[0.0], gap[last[:-1]]])
    total = gap[last] - base
    keep = np.ones(len(gap), dtype=bool)
    keep[last] = False
    u = gap[keep]
    del gap, keep
    u -= np.repeat(base, c)
    u /= np.repeat(total, c)
    return np.repeat(groups, c), u


def _place_in_time(u: np.ndarray, day_a: np.ndarray, day_b: np.ndarray, cal: dict[str, Any]) -> np.ndarray:
    """Map uniforms to seconds since epoch within days [day_a, day_b) following the hourly intensity.

    The map is monotone, so rows sorted by ``u`` within a group stay sorted by time. ``np.interp`` inverts the
    piecewise-linear cumulative intensity; it is fast here because consecutive queries are close together.
    """
    cum = cal["cum_hourly"]
    c_a = cum[day_a * 24]
    target = cum[day_b * 24]
    target -= c_a
    target *= u
    target += c_a
    del c_a
    sec = np.interp(target, cum, np.arange(len(cum), dtype=np.float64) * 3600).astype(np.int64)
    del target
    np.clip(sec, day_a * SECONDS_PER_DAY, day_b * SECONDS_PER_DAY - 1, out=sec)
    sec += cal["start_sec"]
    return sec


# ---- tables ----------------------------------------------------------------------------------------------


def _customers_frame(cust: dict[str, np.ndarray], ids: pa.Array, cal: dict[str, Any]) -> pd.DataFrame:
    start = cal["start_day"]
    churned = cust["churn_rel"] < cal["n_days"]
    churn_date = np.where(churned, start + cust["churn_rel"], np.datetime64("NaT", "D"))
    return pd.DataFrame({
        "customer_id": pd.array(ids, dtype="str"),
        "signup_date": (start + cust["signup_rel"]).astype("M8[us]"),
        "plan": pd.array(np.array(PLANS)[cust["plan"]], dtype="str"),
        "channel": pd.array(np.array(CHANNELS)[cust["channel"]], dtype="str"),
        "region": pd.array(np.array(REGIONS)[cust["region"]], dtype="str"),
        "churn_date": churn_date.astype("M8[us]"),
    })


def _events(cust: dict[str, np.ndarray], months: dict[str, np.ndarray], cal: dict[str, Any], events_per_month: float, ids: pa.Array,
            rng: np.random.Generator) -> pd.DataFrame:
    """Poisson events per customer-month, placed in time, thinned for fading churners."""
    seg = cust["seg"]
    tenure = months["months_since_signup"]
    onboarding = 1 + 0.3 * np.exp(-tenure) + np.where(seg[:, None] == 4, 0.5 * np.exp(-tenure / 2) - 0.25, 0)
    season = _SEASON_ENGAGEMENT[cal["month_of_year"]][None, :]
    raw = (cust["engagement"][:, None] * np.exp(0.3 * months["sat"]) * onboarding * season * months["dip"])
    frac = months["frac"]
    scale = events_per_month * frac.sum() / max(float((raw * frac).sum()), 1e-12)
    lam = (raw * frac * scale).astype(np.float64)
    counts = rng.poisson(lam)

    grp, u = _expand_groups(counts, rng)
    del counts, lam
    cidx = (grp // cal["n_months"]).astype(np.int32)
    a = months["a"].ravel()[grp].astype(np.int64)
    ts = _place_in_time(u, a, a + months["active_days"].ravel()[grp], cal)
    del u, a
    fade = _fade_factor(cust, cidx, ts, cal)
    keep = rng.random(len(ts), dtype=np.float32) < fade
    grp, cidx, ts, fade = grp[keep], cidx[keep], ts[keep], fade[keep]
    del keep

    # Event type: support views rise as satisfaction falls; the rest follow the segment's mix.
    p_support = (0.03 + 0.08 / (1 + np.exp(2.0 * months["sat"] + 1.0))).astype(np.float32).ravel()
    ev_seg = seg[cidx]
    etype = _pick(rng, _SEG_EVENT_MIX, ev_seg)
    etype[rng.random(len(ts), dtype=np.float32) < p_support[grp]] = 4
    sess = np.flatnonzero(etype == 1)
    minutes = (_SEG_SESSION_MIN[ev_seg[sess]] * np.exp(0.1 * months["sat"].ravel()[grp[sess]])
               * fade[sess] ** 0.7 * rng.lognormal(0.0, 0.7, len(sess)))
    del grp, ev_seg, fade
    value = np.full(len(ts), np.nan)
    value[sess] = np.round(np.clip(minutes, 0.1, 480.0), 1)
    return pd.DataFrame({
        "customer_id": _id_column(ids, cidx),
        "timestamp": _seconds_to_ts(ts),
        "event_type": pd.Categorical.from_codes(etype, categories=pd.Index(EVENT_TYPES, dtype="str")),
        "value": value,
    })


def _transactions(cust: dict[str, np.ndarray], months: dict[str, np.ndarray], cal: dict[str, Any], ids: pa.Array, rng: np.random.Generator) -> pd.DataFrame:
    """Monthly plan charges on the sign-up day of month, plus add-on purchases."""
    n, n_months = int(cust["n"]), cal["n_months"]
    start_day = cal["start_day"]
    signup_day = start_day + cust["signup_rel"]
    signup_month = signup_day.astype("M8[M]")
    dom = (signup_day - signup_month.astype("M8[D]")).astype(np.int64)  # 0-based day of month
    first_month = np.maximum(signup_month, start_day.astype("M8[M]"))
    n_cand = ((start_day.astype("M8[M]") + n_months - first_month).astype(np.int64)).clip(0)
    cidx = np.repeat(np.arange(n), n_cand)
    k = np.arange(len(cidx)) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    month = first_month[cidx] + k
    month_len = ((month + 1).astype("M8[D]") - month.astype("M8[D]")).astype(np.int64)
    charge_rel = (month.astype("M8[D]") - start_day).astype(np.int64) + np.minimum(dom[cidx], month_len - 1)
    ok = (charge_rel >= np.maximum(cust["signup_rel"][cidx], 0)) & (charge_rel < cust["churn_rel"][cidx])
    cidx, month, charge_rel = cidx[ok], month[ok], charge_rel[ok]
    n_charge = (month - signup_month[cidx]).astype(np.int64)  # 0 = the sign-up charge
    price = cust["list_price"][cidx].copy()
    rise_month = cal["price_rise_month"]
    if rise_month >= 0:
        rise_rel = cal["bounds"][rise_month]
        price = np.where((charge_rel >= rise_rel) & ~cust["legacy"][cidx], price + 1.0, price)
    price = np.where(cust["promo"][cidx] & (n_charge < 3), price * 0.5, price)
    price = np.where(cust["free_first"][cidx] & (n_charge == 0), 0.0, price)
    charge_sec = (cal["start_sec"] + charge_rel * SECONDS_PER_DAY
                  + rng.integers(2 * 3600, 6 * 3600, len(cidx)))  # nightly billing run

    # Add-ons: per customer-month Poisson, uniform in the active days, thinned for fading churners.
    rate = (cust["addon_rate"][:, None] * np.exp(0.2 * months["sat"]) * months["dip"] * months["frac"])
    counts = rng.poisson(rate)
    flat = counts.ravel()
    grp = np.repeat(np.arange(flat.size), flat)
    a_cidx = (grp // n_months).astype(np.int64)
    a_sec = cal["start_sec"] + months["a"].ravel()[grp].astype(np.int64) * SECONDS_PER_DAY
    span = months["active_days"].ravel()[grp].astype(np.int64) * SECONDS_PER_DAY
    add_sec = a_sec + np.floor(rng.random(len(grp)) * span).astype(np.int64)
    keep = rng.random(len(grp)) < _fade_factor(cust, a_cidx, add_sec, cal)
    a_cidx, add_sec = a_cidx[keep], add_sec[keep]
    add_price = _ADDON_PRICES[_pick(rng, _SEG_ADDON_PRICE, cust["seg"][a_cidx])]

    all_cidx = np.concatenate([cidx, a_cidx])
    all_sec = np.concatenate([charge_sec, add_sec])
    amount = np.round(np.concatenate([price, add_price]), 2)
    order = np.lexsort((all_sec, all_cidx))
    return pd.DataFrame({
        "customer_id": _id_column(ids, all_cidx[order]),
        "timestamp": _seconds_to_ts(all_sec[order]),
        "amount": amount[order].astype(np.float64),
    })


def _interactions(cust: dict[str, np.ndarray], months: dict[str, np.ndarray], cal: dict[str, Any], ids: pa.Array, rng: np.random.Generator) -> pd.DataFrame:
    """Support tickets and reviews whose tone tracks latent satisfaction, plus pre-churn complaints."""
    n_months, n_days = cal["n_months"], cal["n_days"]
    seg, sat = cust["seg"], months["sat"]
    frac = months["frac"]
    rate = (_SEG_CONTACT[seg][:, None] * np.exp(-0.8 * (sat - 0.2)) * (1 + 3 * cust["chronic"][:, None])
            * frac)
    src_counts = [
        rng.poisson(rate),
        (months["billing"] & (rng.random(sat.shape) < 0.6 * frac)).astype(np.int64),
        (months["outage"] & (rng.random(sat.shape) < 0.35 * frac)).astype(np.int64),
    ]
    cidx_parts, sec_parts, src_parts = [], [], []
    for src, counts in enumerate(src_counts):
        flat = counts.ravel()
        grp = np.repeat(np.arange(flat.size), flat)
        a_sec = cal["start_sec"] + months["a"].ravel()[grp].astype(np.int64) * SECONDS_PER_DAY
        span = months["active_days"].ravel()[grp].astype(np.int64) * SECONDS_PER_DAY
        cidx_parts.append(grp // n_months)
        sec_parts.append(a_sec + np.floor(rng.random(len(grp)) * span).astype(np.int64))
        src_parts.append(np.full(len(grp), src, np.int8))

    # Complaining churners: 1 + Poisson(1.2) tickets over their last `complain_lead` days, denser near the end.
    churned = cust["churn_rel"] < n_days
    who = np.flatnonzero(churned & cust["complain"])
    k = 1 + rng.poisson(1.2, len(who))
    c_idx = np.repeat(who, k)
    lead = cust["complain_lead"][c_idx].astype(np.float64)
    before = np.floor(lead * SECONDS_PER_DAY * rng.random(len(c_idx)) ** 1.5).astype(np.int64)
    c_sec = cal["start_sec"] + cust["churn_rel"][c_idx] * SECONDS_PER_DAY - 1 - before
    lower = cal["start_sec"] + np.maximum(cust["signup_rel"][c_idx], 0) * SECONDS_PER_DAY
    ok = c_sec >= lower
    cidx_parts.append(c_idx[ok])
    sec_parts.append(c_sec[ok])
    src_parts.append(np.full(int(ok.sum()), _SRC_CHURN, np.int8))

    cidx = np.concatenate(cidx_parts).astype(np.int64)
    sec = np.concatenate(sec_parts)
    src = np.concatenate(src_parts)
    m = np.clip(np.searchsorted(cal["bounds"], (sec - cal["start_sec"]) // SECONDS_PER_DAY, side="right") - 1,
                0, n_months - 1)
    s = sat[cidx, m].astype(np.float64)
    churn_sec = cal["start_sec"] + cust["churn_rel"][cidx] * SECONDS_PER_DAY
    closeness = np.where(src == _SRC_CHURN,
                         1 - np.clip((churn_sec - sec) / SECONDS_PER_DAY / cust["complain_lead"][cidx], 0, 1), 0)
    z = (s + rng.normal(0, 1, len(s)) * np.where(src == _SRC_BASE, 0.9, 0.7)
         - 0.6 * cust["chronic"][cidx] * (src == _SRC_BASE)
         - np.select([src == _SRC_BILLING, src == _SRC_OUTAGE, src == _SRC_CHURN], [0.9, 0.7, 0.5], 0.0)
         - 1.6 * closeness)
    tone = np.searchsorted(_TONE_CUTS, z).astype(np.int8)

    category = _pick(rng, _TONE_CATEGORY, tone)
    u = rng.random(len(s))
    category[(src == _SRC_BILLING) & (u < 0.9)] = CATEGORIES.index("billing")
    category[(src == _SRC_OUTAGE) & (u < 0.9)] = CATEGORIES.index("technical")
    cancel = (src == _SRC_CHURN) & (tone <= 1) & (u < 0.1 + 0.5 * closeness)
    category[cancel] = CATEGORIES.index("cancellation")

    u_lang = rng.random(len(s))  # Chinese writers sometimes write English, rarely the reverse
    lang = np.where(cust["zh"][cidx], u_lang >= 0.12, u_lang < 0.005).astype(np.int64)
    texts, offsets, sizes = text_bank()
    size = sizes[lang, category, tone]
    if (size == 0).any():
        raise AssertionError("interaction drawn from an empty text bucket")
    text_idx = offsets[lang, category, tone] + np.floor(rng.random(len(s)) * size).astype(np.int64)

    contact = _pick(rng, _TONE_CONTACT, tone)
    rated = (contact != 0) & (rng.random(len(s)) < np.where(contact == 1, 0.6, 0.85))
    stars = np.clip(np.round(3.3 + 0.8 * (tone - 1.5) + 0.4 * s + rng.normal(0, 0.9, len(s))), 1, 5)
    rating = np.where(rated, stars, np.nan)

    order = np.lexsort((sec, cidx))
    return pd.DataFrame({
        "customer_id": _id_column(ids, cidx[order]),
        "timestamp": _seconds_to_ts(sec[order]),
        "channel": pd.array(np.array(CONTACT_CHANNELS)[contact[order]], dtype="str"),
        "category": pd.array(np.array(CATEGORIES)[category[order]], dtype="str"),
        "text": pd.array(texts[text_idx[order]], dtype="str"),
        "rating": rating[order].astype(np.float64),
    })
