"""Check explanations on a real run (not a unit test): completeness of integrated gradients on
100 seeded dev posts, and a figure of one post explained by a model trained without and one
trained with emoticon dropout.

    python scripts/explain_check.py --before runs/emoticon-dropout/lora-p0.0 \
        --after runs/emoticon-dropout/lora-p0.5

Writes docs/studies/explain-check.{json,md} and docs/figures/explain-emoticon-dropout.png.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import numpy as np

from weibo_senti.cli import configure_process
from weibo_senti.data import read_labelled
from weibo_senti.explain import explain
from weibo_senti.files import write_json, write_text
from weibo_senti.predict import SentimentClassifier
from weibo_senti.report import plot_explanations

SHARED = Path(__file__).resolve().parents[2] / "shared"
EMOTICON = re.compile(r"\[[^\[\]]{1,8}\]")


def completeness(clf, texts: list[str]) -> dict:
    gaps, steps, seconds = [], [], []
    for text in texts:
        t0 = time.perf_counter()
        ex = explain(clf, text)
        seconds.append(time.perf_counter() - t0)
        gaps.append(ex.completeness_gap)
        steps.append(ex.steps)
    gaps = np.array(gaps)
    return {
        "posts": len(texts),
        "within_5_percent": int((gaps <= 0.05).sum()),
        "gap_median": float(np.median(gaps)),
        "gap_max": float(gaps.max()),
        "steps_64": steps.count(64),
        "steps_max": max(steps),
        "seconds_median": float(np.median(seconds)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", required=True, help="run trained with --emoticon-dropout 0")
    ap.add_argument("--after", required=True, help="run trained with the default dropout")
    ap.add_argument("--dev", default=str(SHARED / "data/weibo_senti_100k/dev.csv"))
    ap.add_argument("--text", action="append", help="post(s) for the figure (default: a dev post)")
    ap.add_argument("--report", default="docs/studies/explain-check")
    args = ap.parse_args()
    configure_process()
    dev = read_labelled(args.dev)
    sample = random.Random(0).sample(dev.texts, 100)
    before = SentimentClassifier.load(args.before, precision="fp32")
    after = SentimentClassifier.load(args.after, precision="fp32")
    report = {"dev": args.dev, "runs": {"before": args.before, "after": args.after}}
    report["completeness"] = {"after": completeness(after, sample)}
    texts = args.text or [
        next(t for t in sample if EMOTICON.search(t) and 14 <= len(t) <= 30 and "http" not in t)
    ]
    shown, titles, report["figure"] = [], [], []
    for text in texts:
        for name, clf in (("emoticon dropout 0", before), ("emoticon dropout 0.5", after)):
            shown.append(explain(clf, text))
            titles.append(name)
            ex = shown[-1]
            report["figure"].append(
                {"run": name, "text": text, "label": ex.label, "score": ex.score, "chars": ex.chars}
            )
    png = Path("docs/figures/explain-emoticon-dropout.png")
    plot_explanations(shown, titles, png)
    write_json(f"{args.report}.json", report)
    c = report["completeness"]["after"]
    write_text(
        f"{args.report}.md",
        f"Completeness on {c['posts']} seeded dev posts ({args.after}): "
        f"{c['within_5_percent']}/{c['posts']} within 5% (median gap {c['gap_median']:.2e}, "
        f"max {c['gap_max']:.2e}); {c['steps_64']} needed only the first 64 steps, at most "
        f"{c['steps_max']}; median {c['seconds_median']:.2f} s per post on this machine.\n",
    )
    print(open(f"{args.report}.md").read())


if __name__ == "__main__":
    main()
