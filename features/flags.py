"""Early-warning flags derived from the sentiment family: more than 3 complaints, negative recent text.

The seed's four early-warning signs are first-class flags (unit ``flag``, 1 = the sign is present): two
live with the features they are read from (``purchase_drop_flag`` in :mod:`features.value`,
``usage_low_flag`` in :mod:`features.behavioral`), the two here are read from the sentiment family's
window counts, so they follow whatever that family counts as a complaint or a negative message. Each
flag's reason template is the sentence analysts see, and playbook rules can match them
(``early_warnings`` in ``configs/playbooks.yaml``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalogue import FeatureBlock, FeatureSpec

COMPLAINTS_OVER = 3  # "more than 3 complaints in the window"

# Every early-warning flag the system knows, in the order alerts list them.
EARLY_WARNING_FLAGS: tuple[str, ...] = ("purchase_drop_flag", "usage_low_flag", "complaints_over_3_flag",
                                        "negative_text_recent_flag")


def sentiment_flags(frame: pd.DataFrame, windows: tuple[int, int] = (30, 90)) -> FeatureBlock:
    """``complaints_over_3_flag`` (complaints in the long window > 3) and ``negative_text_recent_flag``
    (at least one negative message in the short window), from a sentiment block's columns."""
    short, long_ = windows
    complaints = frame[f"complaints_{long_}d"].to_numpy(dtype=np.float64)
    negative_share = np.nan_to_num(frame[f"negative_share_{short}d"].to_numpy(dtype=np.float64), nan=0.0)
    specs = [
        FeatureSpec("complaints_over_3_flag", "sentiment", "complaints",
                    f"More than {COMPLAINTS_OVER} complaints in the last {long_} days", "flag", long_,
                    reason=f"More than {COMPLAINTS_OVER} complaints in the last {long_} days", risk_direction=1),
        FeatureSpec("negative_text_recent_flag", "sentiment", "text_sentiment",
                    f"Negative sentiment in the customer's messages of the last {short} days", "flag", short,
                    reason=f"Negative sentiment in recent messages (last {short} days)", risk_direction=1),
    ]
    cols = {"complaints_over_3_flag": (complaints > COMPLAINTS_OVER).astype(np.float64),
            "negative_text_recent_flag": (negative_share > 0).astype(np.float64)}
    return FeatureBlock(pd.DataFrame(cols, index=frame.index), specs)


def active_flags(frame: pd.DataFrame) -> list[list[str]]:
    """Per row, the early-warning flags that are on (a flag column absent from ``frame`` is off)."""
    present = [f for f in EARLY_WARNING_FLAGS if f in frame.columns]
    on = np.column_stack([frame[f].to_numpy(dtype=np.float64) >= 0.5 for f in present]) if present else None
    if on is None:
        return [[] for _ in range(len(frame))]
    return [[present[j] for j in np.flatnonzero(row)] for row in on]
