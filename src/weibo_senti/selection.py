"""Active learning: choose the posts of an unlabelled pool that are most worth labelling.

Each post is scored by the run's calibrated uncertainty (the temperature is folded into the
head): ``margin`` (1 − the gap between the two likeliest labels) or ``entropy`` (normalized
to 0–1 by log of the number of labels). The most uncertain ``candidates × n`` posts are kept
(a bounded heap: the pool is streamed in chunks), then, for diversity, clustered into ``n``
groups by k-means on the model's own pooled hidden states (the vector its head reads), and
the most uncertain post of each group is chosen: near-duplicates fall into one group, so
they are not chosen together. Exact repeats of a post are skipped before scoring.

scikit-learn's KMeans does the clustering. The uncertainty sampling itself is a few lines
over our classifier, so small-text and modAL (whole frameworks with their own model
wrappers and training loops) are not pulled in for it.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .progress import progress

log = logging.getLogger("weibo_senti")

STRATEGIES = ("margin", "entropy")
CHUNK_ROWS = 2048
SCORE_COLUMN = "uncertainty"


def uncertainty(probs: np.ndarray, strategy: str) -> np.ndarray:
    """Per row, 0 (sure) to 1 (no idea)."""
    if strategy == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / math.log(probs.shape[1])


@torch.inference_mode()
def probs_and_features(clf, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and the pooled hidden state the head reads, per text."""
    from .features import encode, pad_batch, token_budget_batches

    ids, _ = encode(clf.tokenizer, texts)
    seen: list[torch.Tensor] = []
    hook = gpt2_body(clf.model).register_forward_hook(lambda _m, _a, out: seen.append(out[0]))
    probs = np.zeros((len(ids), len(clf.labels)), dtype=np.float32)
    feats = None
    try:
        for rows in token_budget_batches([len(x) for x in ids], batch_size, clf.max_tokens):
            batch = pad_batch([ids[i] for i in rows], clf.tokenizer.pad_token_id)
            batch = {k: v.to(clf.device) for k, v in batch.items()}
            seen.clear()
            logits = clf.forward_batch(batch)
            last = batch["attention_mask"].sum(1) - 1  # right-padded: the pooled position
            hidden = seen[-1][torch.arange(len(rows)), last].float().cpu().numpy()
            if feats is None:
                feats = np.zeros((len(ids), hidden.shape[1]), dtype=np.float32)
            probs[rows] = logits.float().softmax(-1).cpu().numpy()
            feats[rows] = hidden
    finally:
        hook.remove()
    return probs, feats


def gpt2_body(model) -> torch.nn.Module:
    """The transformer under the head (whatever wraps it: PEFT, bottleneck adapters, whose
    blocks' hooks it runs): its last hidden state is what every head reads."""
    from transformers import GPT2Model

    bodies = [m for m in model.modules() if isinstance(m, GPT2Model)]
    if not bodies:
        raise UserError("select needs a GPT-2 classifier; this run's model has no GPT-2 body")
    return bodies[0]


@dataclass
class Candidates:
    """The ``size`` most uncertain posts so far: a min-heap on (score, order)."""

    size: int
    heap: list = field(default_factory=list)
    seen_texts: set = field(default_factory=set)
    empty: int = 0
    repeats: int = 0
    unparsable: int = 0
    scored: int = 0

    def new_text(self, text: str) -> bool:
        """False for an empty post or one already seen (counted)."""
        if not text.strip():
            self.empty += 1
            return False
        key = hashlib.blake2b(text.strip().encode("utf-8", "surrogatepass"), digest_size=8)
        key = key.digest()
        if key in self.seen_texts:
            self.repeats += 1
            return False
        self.seen_texts.add(key)
        return True

    def offer(self, scores: np.ndarray, feats: np.ndarray, rows: list[dict]) -> None:
        for score, feat, row in zip(scores, feats, rows):
            item = (float(score), self.scored, feat, row)
            self.scored += 1
            if len(self.heap) < self.size:
                heapq.heappush(self.heap, item)
            elif item[:2] > self.heap[0][:2]:
                heapq.heapreplace(self.heap, item)


def choose(cands: Candidates, n: int, diversity: str, seed: int) -> list[tuple]:
    """``n`` of the candidates: the most uncertain of each of ``n`` k-means clusters, or
    (``diversity`` none) simply the ``n`` most uncertain; most uncertain first. Posts the
    model cannot tell apart (fewer distinct points than ``n``) are topped up by uncertainty."""
    items = sorted(cands.heap, key=lambda it: (-it[0], it[1]))
    if diversity == "none" or len(items) <= n:
        return items[:n]
    from sklearn.cluster import KMeans

    feats = np.stack([it[2] for it in items]).astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12
    distinct = len(np.unique(feats.round(6), axis=0))
    kmeans = KMeans(n_clusters=min(n, distinct), random_state=seed, n_init=1)
    best: dict[int, tuple] = {}
    for it, c in zip(items, kmeans.fit_predict(feats)):  # items are most uncertain first
        best.setdefault(int(c), it)
    chosen = {it[1] for it in best.values()}
    if len(best) < n:
        log.info(
            "only %d groups of the %d candidates look different to the model: the other %d "
            "posts are the next most uncertain", len(best), len(items), n - len(best),
        )  # fmt: skip
        extra = [it for it in items if it[1] not in chosen][: n - len(best)]
        best.update({-1 - i: it for i, it in enumerate(extra)})
    return sorted(best.values(), key=lambda it: (-it[0], it[1]))


# ---------------------------------------------------------------------------- the command
@dataclass
class Request:
    run: Path
    pool: str
    n: int
    out: Path
    strategy: str = "margin"
    diversity: str = "kmeans"
    candidates: int = 10  # × n posts kept for the diversity step
    text_column: str | None = None
    label_column: str = "label"
    encoding: str | None = None
    batch_size: int | None = None  # the classifier's batch_rows
    seed: int = 42
    base_model: str | None = None
    overwrite: bool = False


def select(req: Request) -> dict:
    """Write the chosen posts to ``req.out``: the pool's own columns, the score and an empty
    label column, most uncertain first. Returns a summary."""
    from . import tables
    from .predict import SentimentClassifier

    check_request(req)
    shards = open_pool(req)
    clf = SentimentClassifier.load(req.run, req.base_model, precision="fp32", engine="torch")
    cands = Candidates(req.candidates * req.n)
    score_pool(clf, shards, req, cands)
    usable = cands.scored
    if usable < req.n:
        raise UserError(
            f"--n {req.n} is more than the {usable} distinct posts with text in {req.pool}"
        )
    chosen = choose(cands, req.n, req.diversity, req.seed)
    header = list(dict.fromkeys(c for s in shards for c in s.columns))
    header += [SCORE_COLUMN, req.label_column]
    rows = [
        {**row, SCORE_COLUMN: round(score, 6), req.label_column: None}
        for score, _, _, row in chosen
    ]
    tables.write_table(req.out, rows, header)
    return {
        "out": str(req.out), "chosen": len(rows), "scored": usable, "empty": cands.empty,
        "repeats": cands.repeats, "unparsable": cands.unparsable, "labels": clf.labels,
        "uncertainty_range": [rows[-1][SCORE_COLUMN], rows[0][SCORE_COLUMN]],
    }  # fmt: skip


def check_request(req: Request) -> None:
    from . import tables

    if req.strategy not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {req.strategy}")
    if req.diversity not in ("kmeans", "none"):
        raise UserError(f"--diversity must be kmeans or none, not {req.diversity}")
    if req.n < 1 or req.candidates < 1:
        raise UserError("--n and --candidates must be at least 1")
    if req.out.suffix.lower() not in tables.OUTPUT_SUFFIXES:  # said before the model loads
        raise UserError(f"--out must end in .csv, .tsv, .jsonl or .parquet, not {req.out.name}")
    if req.out.exists() and not req.overwrite:
        raise UserError(
            f"{req.out} exists: pass --overwrite to replace it, or choose another --out"
        )


def open_pool(req: Request) -> list:
    """The pool's files, read once for their columns; refusals before the model loads."""
    from .bulk import find_shards, scan_shards

    def no_label_column(columns: list[str], source: str) -> None:
        if req.label_column in columns:
            raise UserError(
                f"{source} already has a column '{req.label_column}': name the new one with "
                "--label-column (the pool's own columns are written as they are)"
            )
        if SCORE_COLUMN in columns:
            raise UserError(
                f"{source} already has a column '{SCORE_COLUMN}', the column select adds: "
                "rename it first"
            )

    paths = find_shards(req.pool, req.out)
    shards = scan_shards(paths, req.encoding, req.text_column, no_label_column)
    rows = sum(s.rows for s in shards)
    if req.n > rows:
        raise UserError(f"--n {req.n} is more than the {rows} posts of {req.pool}")
    return shards


def score_pool(clf, shards: list, req: Request, cands: Candidates) -> None:
    from .bulk import text_of

    total = sum(s.rows for s in shards)
    bar = progress(total=total, desc="scoring the pool", unit="post")
    for shard in shards:
        chunk: list[tuple[str, dict]] = []
        for rec in shard.iter_rows():
            bar.update(1)
            text = text_of(rec.values.get(shard.text_column))
            cands.unparsable += rec.unparsable
            if not rec.unparsable and cands.new_text(text):
                chunk.append((text, rec.values))
            if len(chunk) == CHUNK_ROWS:
                score_chunk(clf, chunk, req, cands)
                chunk = []
        if chunk:
            score_chunk(clf, chunk, req, cands)
    bar.close()


def score_chunk(clf, chunk: list[tuple[str, dict]], req: Request, cands: Candidates) -> None:
    rows = req.batch_size or clf.batch_rows
    probs, feats = probs_and_features(clf, [t for t, _ in chunk], rows)
    cands.offer(uncertainty(probs, req.strategy), feats, [row for _, row in chunk])
