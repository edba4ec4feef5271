"""Extra columns of events and transactions as features, declared in config (``tables.<role>.extra_columns``).

A numeric column (quantity, discount, an event value per type) gives its sum and mean per customer over each
window of ``features.windows_days``; a categorical column with its listed values (product, plan change kind)
gives the count of rows per value and window. Windows end at the cutoff, exclusive, like every family. The
values to count are listed in the config so the features are the same at every cutoff and at scoring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.timebase import DAY, window_slice
from features.behavioral import _slug
from features.catalogue import FeatureBlock, FeatureSpec, count_by

FAMILY = {"events": "behavioral", "transactions": "value"}


def extra_column_features(table: pd.DataFrame, role: str, n: int, as_of: pd.Timestamp, windows: list[int],
                          extra: dict[str, str | list[str]]) -> FeatureBlock:
    """Per customer row code: sums and means of numeric extras, counts per listed value of categorical ones."""
    cols: dict[str, np.ndarray] = {}
    specs: list[FeatureSpec] = []
    ts, codes = table["timestamp"], table["_code"].to_numpy()
    fam = FAMILY[role]
    for w in sorted(set(windows)):
        sl = window_slice(ts, as_of - w * DAY, as_of)
        c = codes[sl]
        for col, kind in extra.items():
            base = f"{role}_{_slug(col)}"
            if kind == "numeric":
                v = table[col].to_numpy(dtype=np.float64)[sl]
                total, seen = count_by(c, n, v), count_by(c, n, (~np.isnan(v)).astype(np.float64))
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(seen > 0, total / seen, np.nan)
                for stat, values, text in (("sum", total, "Total"), ("mean", mean, "Average")):
                    cols[f"{base}_{stat}_{w}d"] = values
                    specs.append(FeatureSpec(f"{base}_{stat}_{w}d", fam, base, f"{text} {col} of {role} in the last "
                                             f"{w} days (extra column)", "ratio", w,
                                             reason=f"{text} {col} {{value}} in the last {w} days (typical customer: "
                                             "{typical})"))
                continue
            values = table[col].to_numpy()[sl]
            for level in kind:
                name = f"{base}_{_slug(str(level))}_{w}d"
                cols[name] = count_by(c[values == level], n)
                specs.append(FeatureSpec(name, fam, f"{base}_{_slug(str(level))}", f"{role.capitalize()} with {col} = "
                                         f"{level} in the last {w} days (extra column)", "count", w,
                                         reason=f"{{value}} {role} with {col} {level} in the last {w} days "
                                         "(typical customer: {typical})"))
    return FeatureBlock(pd.DataFrame(cols, index=pd.RangeIndex(n)), specs)
