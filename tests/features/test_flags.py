"""The per-row list of early-warning flags that are on (the flags themselves are tested with their families)."""

from __future__ import annotations

import pandas as pd

from features.flags import active_flags


def test_active_flags_lists_the_flags_that_are_on() -> None:
    frame = pd.DataFrame({"usage_low_flag": [1.0, 0.0], "purchase_drop_flag": [1.0, 0.0], "other": [1, 1]})
    assert active_flags(frame) == [["purchase_drop_flag", "usage_low_flag"], []]
    assert active_flags(pd.DataFrame({"x": [1]})) == [[]]
