"""Support-text sentiment on a hand-labelled set, before/after the support-text cues, and scoring time per length.

The labelled set (``tests/data/support_sentiment_labelled.tsv``) holds support-style messages in English and
Chinese written for this project (not from ``churn/demo_texts.py``): sarcasm, negation, polite cancellations,
billing disputes, threats, restore requests, thanks that mention a past problem, questions about cancelling,
how-to questions, very short and very long messages, mixed Chinese/English. Each has a sentiment label
(negative / neutral / positive) and a separate ``complaint`` label, and a split: ``dev`` (looked at while
writing the cues) and ``heldout`` (evaluated only).

Scorers: ``before`` is "plain" (VADER + the Chinese lexicon, as shipped before the cues) with the old content
rule for complaints (a configured complaint keyword in the text); ``after`` is "builtin" (the same scorers read
as support text) with complaints by content (:func:`features.sentiment.content_complaint`). A score maps to a
label with the features' threshold: below ``negative_threshold`` (-0.3) negative, above its mirror positive.

Then times the builtin scorer on one message of 80 KB and 1 MB (each must take under a second: the cap per
message, ``features.text_sentiment.MAX_TEXT_CHARS``) and writes ``benchmarks/results/sentiment_eval.json``.

    python benchmarks/sentiment_eval.py                  # the table
    python benchmarks/sentiment_eval.py --errors dev     # also list the dev messages the "after" scorer gets wrong
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from churn.config import SentimentConfig  # noqa: E402
from features.sentiment import content_complaint  # noqa: E402
from features.text_sentiment import keyword_flags, load_scorer  # noqa: E402

DATA = ROOT / "tests" / "data" / "support_sentiment_labelled.tsv"
LABELS = ["negative", "neutral", "positive"]
# The default config's complaint keywords (configs/default.yaml): the old content rule for complaints.
DEFAULT_KEYWORDS = {"cancellation": ["cancel", "close my account", "leave", "switch to", "取消", "退订"],
                    "billing": ["charged", "refund", "invoice", "overcharge", "扣费", "退款"]}


def load_set(path: Path = DATA) -> pd.DataFrame:
    """The labelled set: id, lang, split, label, complaint (bool), text."""
    frame = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False, quoting=3)
    frame["complaint"] = frame["complaint"].map({"true": True, "false": False})
    if frame["complaint"].isna().any() or not frame["label"].isin(LABELS).all():
        raise ValueError(f"{path}: complaint must be true/false and label one of {LABELS}")
    return frame


def to_labels(scores: np.ndarray, threshold: float) -> np.ndarray:
    """negative below ``threshold``, positive above ``-threshold``, else neutral."""
    return np.select([scores < threshold, scores > -threshold], ["negative", "positive"], default="neutral")


def predict(frame: pd.DataFrame, which: str, cfg: SentimentConfig) -> pd.DataFrame:
    """Predicted label and complaint per message with the "before" or "after" scorer."""
    texts = frame["text"]
    if which == "before":
        scores = load_scorer("plain").score(texts).to_numpy()
        complaint = keyword_flags(texts, DEFAULT_KEYWORDS).any(axis=1).to_numpy()
    else:
        read = load_scorer("builtin").analyse(texts)
        scores = read["sentiment"].to_numpy()
        complaint = content_complaint(scores, read["complaint_intent"].to_numpy(), cfg.negative_threshold)
    return pd.DataFrame({"score": scores, "label": to_labels(scores, cfg.negative_threshold),
                         "complaint": complaint}, index=frame.index)


# Ablation groups of the cue table: cue kinds, and the blocks that session 9 added (a '# ----' section header whose
# title contains the key, or a plain comment line that starts with it, up to the next comment line).
KIND_GROUPS = {"negation": {"negator", "conditional"}, "contrast": {"contrast"}}
BLOCK_GROUPS = {"vocabulary": "broader complaint vocabulary", "lexicon words": "# general support vocabulary",
                "cancellation intent": "# cancellation intent in any form"}
DECISION_SPLITS = ("dev", "heldout", "fresh", "fresh3", "fresh4")  # fresh2 and fresh5 never take part


def cues_without(group: str, cues_text: str) -> str:
    """The cue table without one ablation group's lines."""
    kinds, marker, inside, kept = KIND_GROUPS.get(group, set()), BLOCK_GROUPS.get(group), False, []
    for line in cues_text.splitlines():
        if line.startswith("#"):
            inside = marker is not None and (marker in line if line.startswith("# ----") else line.startswith(marker))
            kept.append(line)
            continue
        parts = line.split("\t")
        if not inside and not (len(parts) == 4 and parts[1] in kinds):
            kept.append(line)
    return "\n".join(kept) + "\n"


def ablation(frame: pd.DataFrame, cfg: SentimentConfig) -> list[dict[str, object]]:
    """Accuracy and macro-F1 per language and decision split with each group of cues left out (and, as "plain
    report", without the plain-report reading)."""
    import tempfile

    from features.support_text import REPORT_VALENCE, SupportTextScorer, load_cues
    from features.text_sentiment import ChineseLexiconScorer, MultilingualScorer, VaderScorer

    shipped = (ROOT / "features" / "data" / "support_cues.tsv").read_text(encoding="utf-8")
    part = frame[frame["split"].isin(DECISION_SPLITS)]
    rows: list[dict[str, object]] = []
    for group in ["none", *KIND_GROUPS, *BLOCK_GROUPS, "plain report"]:
        report = 0.0 if group == "plain report" else REPORT_VALENCE
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cues.tsv"
            path.write_text(cues_without(group, shipped), encoding="utf-8")
            load_cues(path)  # still a valid table
            scorer = MultilingualScorer({"en": SupportTextScorer(VaderScorer(), "en", path, report),
                                         "zh": SupportTextScorer(ChineseLexiconScorer(), "zh", path, report)})
            read = scorer.analyse(part["text"])
        scores = read["sentiment"].to_numpy()
        pred = pd.DataFrame({"label": to_labels(scores, cfg.negative_threshold), "complaint": content_complaint(
            scores, read["complaint_intent"].to_numpy(), cfg.negative_threshold)}, index=part.index)
        for (lang, split), cell in part.groupby(["lang", "split"], sort=True):
            rows.append({"left_out": group, "lang": lang, "split": split, **metrics(cell, pred.loc[cell.index])})
    return rows


def print_ablation(rows: list[dict[str, object]]) -> None:
    table = pd.DataFrame(rows).pivot_table(index="left_out", columns=["lang", "split"], values="accuracy", sort=False)
    print("\naccuracy with one group of cues left out (decision splits only)\n" + table.round(3).to_string())


def metrics(truth: pd.DataFrame, pred: pd.DataFrame) -> dict[str, float]:
    return {
        "n": len(truth),
        "accuracy": accuracy_score(truth["label"], pred["label"]),
        "macro_f1": f1_score(truth["label"], pred["label"], labels=LABELS, average="macro", zero_division=0),
        "complaint_f1": f1_score(truth["complaint"], pred["complaint"], zero_division=0),
    }


def time_long_messages(sizes: tuple[int, ...] = (80_000, 1_000_000)) -> dict[str, float]:
    """Seconds to score one message of each size (English and Chinese), builtin scorer, fresh each time."""
    scorer = load_scorer("builtin")
    # problems, negations, a condition and contrasts in every sentence: every rule of the support-text reading runs
    en = "The export keeps failing, but support has not answered. It would be great if it didn't crash. Thanks. "
    zh = "导出一直失败，但是客服也没有回复，要是不闪退就好了，请尽快修好，谢谢。"
    out: dict[str, float] = {}
    for size in sizes:
        for lang, unit in (("en", en), ("zh", zh)):
            text = (unit * (size // len(unit) + 1))[:size]
            t0 = time.perf_counter()
            scorer.score(pd.Series([text]))
            out[f"{lang}_{size}"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", choices=["dev", "heldout", "fresh", "fresh3", "fresh4"],
                        help="list the messages of this split the after scorer gets wrong (never fresh2 or fresh5)")
    parser.add_argument("--ablation", action="store_true", help="also leave each group of cues out in turn")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sentiment_eval.json")
    args = parser.parse_args(argv)
    cfg = SentimentConfig()
    frame = load_set()
    preds = {which: predict(frame, which, cfg) for which in ("before", "after")}
    rows = []
    print("| lang | split | n | scorer | accuracy | macro-F1 | complaint F1 |\n|---|---|---|---|---|---|---|")
    for (lang, split), part in frame.groupby(["lang", "split"], sort=True):
        for which, pred in preds.items():
            m = metrics(part, pred.loc[part.index])
            rows.append({"lang": lang, "split": split, "scorer": which, **m})
            print(f"| {lang} | {split} | {m['n']} | {which} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} "
                  f"| {m['complaint_f1']:.3f} |")
    timings = time_long_messages()
    print("\n| message | seconds |\n|---|---|")
    for key, seconds in timings.items():
        print(f"| {key} chars | {seconds:.3f} |")
    load = os.getloadavg()
    print(f"\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {platform.platform()}")
    if args.errors:
        after = preds["after"]
        dev = frame[frame["split"] == args.errors]
        wrong = dev[(after.loc[dev.index, "label"] != dev["label"]) | (after.loc[dev.index, "complaint"] != dev["complaint"])]
        for i, row in wrong.iterrows():
            p = after.loc[i]
            print(f"{row['id']}\t{row['label']}/{row['complaint']}\t{p['label']}/{p['complaint']}\t{p['score']:+.2f}\t{row['text'][:100]}")
    ablation_rows = ablation(frame, cfg) if args.ablation else []
    if ablation_rows:
        print_ablation(ablation_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "ablation": ablation_rows, "long_message_seconds": timings,
                                    "load_average": load, "platform": platform.platform()}, indent=2) + "\n")
    slow = {k: v for k, v in timings.items() if k.endswith("_1000000") and v >= 1.0}
    assert not slow, f"a 1 MB message took a second or more: {slow}"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
