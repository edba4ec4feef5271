"""Early-warning flags read from the sentiment family's columns, and the per-row list of flags that are on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.flags import active_flags, sentiment_flags


def test_sentiment_flags_by_hand() -> None:
    frame = pd.DataFrame({"complaints_90d": [3.0, 4.0, 0.0], "negative_share_30d": [0.0, 0.5, np.nan]})
    block = sentiment_flags(frame)
    # more than 3 complaints: 4 yes, 3 no; a negative message in the last 30 days: share > 0 (none written: no)
    assert block.frame.to_dict("list") == {"complaints_over_3_flag": [0.0, 1.0, 0.0],
                                           "negative_text_recent_flag": [0.0, 1.0, 0.0]}
    specs = {s.name: s for s in block.specs}
    assert specs["complaints_over_3_flag"].reason == "More than 3 complaints in the last 90 days"
    assert specs["negative_text_recent_flag"].group == "text_sentiment"
    assert all(s.unit == "flag" and s.risk_direction == 1 for s in block.specs)


def test_active_flags_lists_the_flags_that_are_on() -> None:
    frame = pd.DataFrame({"usage_low_flag": [1.0, 0.0], "purchase_drop_flag": [1.0, 0.0], "other": [1, 1]})
    assert active_flags(frame) == [["purchase_drop_flag", "usage_low_flag"], []]
    assert active_flags(pd.DataFrame({"x": [1]})) == [[]]
