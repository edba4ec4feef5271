"""Does jieba word segmentation help the Chinese scorer? Lexicon matches aligned to jieba's words vs free scanning.

jieba is not a dependency (sdist only, last release 2020, seconds to initialise): install it into a scratch folder
and pass that folder, e.g. ``pip install --no-deps --target /tmp/jieba_t jieba`` then
``python benchmarks/zh_segmentation_check.py /tmp/jieba_t``. Uses the dev, heldout and fresh splits only (fresh2 and
fresh3 stay untouched by decisions).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sentiment_eval import load_set, metrics, to_labels  # noqa: E402
from churn.config import SentimentConfig  # noqa: E402
from features.sentiment import content_complaint  # noqa: E402
from features.support_text import SupportTextScorer  # noqa: E402
from features.text_sentiment import _BOUNDARIES, ChineseLexiconScorer  # noqa: E402


def _aligned_scorer(jieba: object) -> ChineseLexiconScorer:
    """The shipped lexicon scorer, accepting a term only where it starts and ends on jieba word boundaries."""

    class JiebaAligned(ChineseLexiconScorer):
        def _tokens(self, text: str) -> list:
            bounds, pos = {0}, 0
            for word in jieba.cut(text, HMM=True):  # type: ignore[attr-defined]
                pos += len(word)
                bounds.add(pos)
            out, i = [], 0
            while i < len(text):
                if text[i] in _BOUNDARIES:
                    out.append((i, i + 1, None))
                    i += 1
                    continue
                for length in self.lengths_.get(text[i], ()):
                    term = self.terms_.get(text[i : i + length])
                    if term is not None and i in bounds and i + length in bounds:
                        out.append((i, i + length, term))
                        i += length
                        break
                else:
                    i += 1
            return out

    return JiebaAligned()


def main(jieba_path: str) -> None:
    sys.path.insert(0, jieba_path)
    t0 = time.perf_counter()
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    t_init = time.perf_counter() - t0
    cfg = SentimentConfig()
    frame = load_set()
    frame = frame[(frame["lang"] == "zh") & frame["split"].isin(["dev", "heldout", "fresh"])]
    for name, base in (("scan", ChineseLexiconScorer()), ("jieba", _aligned_scorer(jieba))):
        t0 = time.perf_counter()
        read = SupportTextScorer(base, "zh").analyse(frame["text"])
        seconds = time.perf_counter() - t0
        s = read["sentiment"].to_numpy()
        complaint = content_complaint(s, read["complaint_intent"].to_numpy(), cfg.negative_threshold)
        pred = pd.DataFrame({"label": to_labels(s, cfg.negative_threshold), "complaint": complaint}, index=frame.index)
        for split, part in frame.groupby("split"):
            m = metrics(part, pred.loc[part.index])
            print(f"{name}\t{split}\tacc={m['accuracy']:.3f}\tmacro-F1={m['macro_f1']:.3f}")
        print(f"{name}\t{seconds:.3f}s for {len(frame)} texts")
    print(f"jieba initialise: {t_init:.2f}s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/jieba_t")
