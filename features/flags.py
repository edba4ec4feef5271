"""The early-warning flags: which of the seed's four signs are on for a customer.

The signs are first-class features (unit ``flag``, 1 = the sign is present), each computed with the features
it is read from: ``purchase_drop_flag`` in :mod:`features.value`, ``usage_low_flag`` in
:mod:`features.behavioral`, ``complaints_over_3_flag`` and ``negative_text_recent_flag`` in
:mod:`features.sentiment` (complaints and negative messages by content). Each flag's reason template is the
sentence analysts see, and playbook rules can match them (``early_warnings`` in ``configs/playbooks.yaml``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Every early-warning flag the system knows, in the order alerts list them.
EARLY_WARNING_FLAGS: tuple[str, ...] = ("purchase_drop_flag", "usage_low_flag", "complaints_over_3_flag",
                                        "negative_text_recent_flag")


def active_flags(frame: pd.DataFrame) -> list[list[str]]:
    """Per row, the early-warning flags that are on (a flag column absent from ``frame`` is off)."""
    present = [f for f in EARLY_WARNING_FLAGS if f in frame.columns]
    on = np.column_stack([frame[f].to_numpy(dtype=np.float64) >= 0.5 for f in present]) if present else None
    if on is None:
        return [[] for _ in range(len(frame))]
    return [[present[j] for j in np.flatnonzero(row)] for row in on]
