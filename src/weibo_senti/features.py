"""Turning texts into model inputs: batched fast tokenization, dynamic padding, length grouping."""

from __future__ import annotations

import hashlib
import json

import torch
from torch.utils.data import Sampler

CHARS_PER_TOKEN_CAP = 16  # pre-cut huge texts: no wordpiece token is longer than this


def encode(tokenizer, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """Token ids and whether each text was cut: exactly ``tokenizer(text, truncation=True)``.

    The tokenizer's own rules decide (``model_max_length``, no token_type_ids), as in any
    stock client. Huge texts are pre-cut for speed; where that could matter (the cut text
    came out shorter than the limit) the whole text is tokenized again.
    """
    max_length = tokenizer.model_max_length
    clipped = [t[: max_length * CHARS_PER_TOKEN_CAP] for t in texts]
    # One token over the limit tells us whether truncation happened, without a second pass.
    full = _ids(tokenizer, clipped, max_length + 1)
    redo = [
        i
        for i, (t, c) in enumerate(zip(texts, clipped))
        if len(t) > len(c) and len(full[i]) <= max_length
    ]
    for i, ids in zip(redo, _ids(tokenizer, [texts[i] for i in redo], max_length + 1)):
        full[i] = ids
    truncated = [len(x) > max_length for x in full]
    ids = [x[: max_length - 1] + [x[-1]] if cut else x for x, cut in zip(full, truncated)]
    return ids, truncated


def _ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)
    return enc["input_ids"]


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
    digest.update(f"{tokenizer_fingerprint(tokenizer)}|{tokenizer.model_max_length}".encode())
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


def pad_batch(ids: list[list[int]], pad_id: int, labels: list[int] | None = None) -> dict:
    """Right-pad to the longest in the batch; GPT-2 pools the last non-[PAD] token."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, ids: list[list[int]], labels: list[int]):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.labels[i]


class Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items):
        ids, labels = zip(*items)
        return pad_batch(list(ids), self.pad_id, list(labels))


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffle; optionally groups similar lengths (less padding).

    Order depends only on (seed, epoch), so a resumed run sees the same batches; ``skip``
    drops the batches an interrupted epoch already trained on.
    """

    def __init__(self, lengths, batch_size: int, seed: int, shuffle=True, group_by_length=True):
        self.lengths = list(lengths)
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.group_by_length = shuffle, group_by_length
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            return [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
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
        return batches

    def __iter__(self):
        skip, self.skip = self.skip, 0
        yield from self.batches()[skip:]

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
