"""Turning texts into model inputs: batched fast tokenization, dynamic padding, length grouping."""

from __future__ import annotations

import hashlib
import json

import torch
from torch.utils.data import Sampler


def encode(tokenizer, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """Token ids and whether each text was cut: exactly ``tokenizer(text, truncation=True)``.

    The tokenizer's own rules decide (``model_max_length``, no token_type_ids), as in any
    stock client. What truncation cut off comes back as overflow rows: a text with one is cut.
    """
    if not texts:
        return [], []
    enc = tokenizer(
        texts, truncation=True, return_overflowing_tokens=True, return_attention_mask=False
    )
    ids: list = [None] * len(texts)
    truncated = [False] * len(texts)
    for row, i in zip(enc["input_ids"], enc["overflow_to_sample_mapping"]):
        if ids[i] is None:
            ids[i] = row
        else:
            truncated[i] = True
    return ids, truncated


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever the tokenizer would produce different ids."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    settings = json.dumps([type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None)])
    return hashlib.sha256((vocab + settings).encode()).hexdigest()[:16]


def encode_cached(tokenizer, texts: list[str], cache_dir=None):
    """``encode`` with the result kept on disk per (texts, tokenizer and its max length)."""
    from safetensors.torch import load_file, save_file

    from .files import atomic_write
    from .hub import cache_dir as default_cache

    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(f"v2|{tokenizer_fingerprint(tokenizer)}|{tokenizer.model_max_length}".encode())
    path = (cache_dir or default_cache() / "tokens") / f"{digest.hexdigest()[:32]}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            flat, offsets = t["ids"].tolist(), t["offsets"].tolist()
            ids = [flat[offsets[i] : offsets[i + 1]] for i in range(len(texts))]
            return ids, [bool(x) for x in t["truncated"].tolist()]
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    ids, truncated = encode(tokenizer, texts)
    lengths = torch.tensor([0] + [len(x) for x in ids])
    tensors = {
        "ids": torch.tensor([i for x in ids for i in x], dtype=torch.int32),
        "offsets": torch.cumsum(lengths, 0),
        "truncated": torch.tensor(truncated, dtype=torch.uint8),
    }
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    except OSError:
        pass  # a read-only cache only costs speed
    return ids, truncated


def pad_batch(
    ids: list[list[int]], pad_id: int, labels: list[int] | None = None, multiple: int = 1
) -> dict:
    """Right-pad to the longest in the batch, rounded up to ``multiple``; GPT-2 pools the last
    non-[PAD] token, so the padding changes no logit (beyond float rounding)."""
    width = -(-max(len(x) for x in ids) // multiple) * multiple
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch


def token_budget_batches(
    lengths: list[int], max_count: int, max_tokens: int, multiple: int = 8
) -> list[list[int]]:
    """Indices grouped for forward passes: sorted by length, each batch at most ``max_count``
    rows and at most ``max_tokens`` once padded (rows × longest, rounded up to ``multiple``).
    Short posts share big batches, long ones smaller ones, so little compute goes to [PAD]
    (text-embeddings-inference forms its batches by a token budget the same way)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        width = -(-max(lengths[i], 1) // multiple) * multiple  # sorted: the widest so far
        if current and (len(current) >= max_count or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded posts and labels (and each row's weight, if given); with ``stripped`` (each post without its emoticons), a share
    ``dropout`` of the posts is served stripped, drawn afresh each epoch from (seed, epoch)."""

    def __init__(
        self,
        ids: list[list[int]],
        labels: list[int],
        stripped: list[list[int]] | None = None,
        dropout: float = 0.0,
        seed: int = 0,
        weights: list[float] | None = None,
    ):
        self.ids, self.labels, self.weights = ids, labels, weights
        self.stripped, self.dropout, self.seed = stripped, dropout, seed
        self.use_stripped = [False] * len(ids)

    def set_epoch(self, epoch: int) -> None:
        if self.stripped is None or not self.dropout:
            return
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.use_stripped = (torch.rand(len(self.ids), generator=g) < self.dropout).tolist()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.stripped[i] if self.use_stripped[i] else self.ids[i]
        if self.weights is not None:
            return ids, self.labels[i], self.weights[i]
        return ids, self.labels[i]


class Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items):
        ids, labels, *weights = zip(*items)
        batch = pad_batch(list(ids), self.pad_id, list(labels))
        if weights:  # rows weighted by their file (--data-weights)
            batch["weights"] = torch.tensor(weights[0], dtype=torch.float32)
        return batch


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffle; optionally groups similar lengths (less padding).

    The global batches depend only on (seed, epoch), so a resumed run sees the same batches,
    and so does every process: process ``process_index`` of ``num_processes`` takes its
    contiguous share of each global batch. (Accelerate's own split drops a part-filled batch
    from the middle of an epoch and pads the last one with repeated rows.) A last batch with
    fewer posts than processes joins the batch before it, so no process is ever left empty.
    """

    def __init__(
        self,
        lengths,
        batch_size: int,
        seed: int,
        shuffle=True,
        group_by_length=True,
        num_processes: int = 1,
        process_index: int = 0,
    ):
        self.lengths = list(lengths)
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.group_by_length = shuffle, group_by_length
        self.num_processes, self.process_index = num_processes, process_index
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The global batches of this epoch."""
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            batches = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
            return self._no_tiny_batch(batches)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(n, generator=g).tolist()
        if self.group_by_length:
            # Sort within shuffled chunks of 50 batches, then shuffle the batches themselves.
            chunk = bs * 50
            order = [
                i
                for s in range(0, n, chunk)
                for i in sorted(order[s : s + chunk], key=lambda j: self.lengths[j])
            ]
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if self.group_by_length:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return self._no_tiny_batch(batches)

    def _no_tiny_batch(self, batches: list[list[int]]) -> list[list[int]]:
        tiny = [i for i, b in enumerate(batches) if len(b) < self.num_processes]
        if tiny and len(batches) > 1:
            i = tiny[0]
            other = i - 1 if i > 0 else 1
            batches[other] = batches[other] + batches[i]
            del batches[i]
        return batches

    def shard(self, batch: list[int]) -> list[int]:
        size, extra = divmod(len(batch), self.num_processes)
        start = self.process_index * size + min(self.process_index, extra)
        return batch[start : start + size + (self.process_index < extra)]

    def __iter__(self):
        for batch in self.batches():
            yield self.shard(batch)

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        full, rest = divmod(n, bs)
        return full + (1 if rest and (rest >= self.num_processes or full == 0) else 0)
