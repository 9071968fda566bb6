"""Tokenization, padding and the batch sampler."""

from __future__ import annotations

import pytest

from weibo_senti.features import EpochBatchSampler, encode, pad_batch
from weibo_senti.runfolder import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_base):
    return load_tokenizer(tiny_base, max_length=10)


def test_encode_truncates_keeping_sep_and_flags_it(tok):
    ids, cut = encode(tok, ["好差", "好" * 10, "好" * 8, "好" * 10_000])
    assert cut == [False, True, False, True]
    assert [len(x) for x in ids] == [4, 10, 10, 10]
    for x in ids:
        assert x[0] == tok.cls_token_id and x[-1] == tok.sep_token_id
    assert tok.pad_token_id not in sum(ids, [])


def test_pad_batch_right_pads_with_pad_id():
    b = pad_batch([[5, 6, 7], [5]], pad_id=0, labels=[1, 0])
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("group", [True, False])
def test_sampler_covers_everything_once_and_depends_only_on_seed_and_epoch(group):
    lengths = [i % 37 for i in range(1000)]
    s = EpochBatchSampler(lengths, 16, seed=3, group_by_length=group)
    s.set_epoch(0)
    e0 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(1000))
    assert e0 == list(EpochBatchSampler(lengths, 16, seed=3, group_by_length=group))
    s.set_epoch(1)
    assert list(s) != e0


@pytest.mark.parametrize("rows", [1000, 1001, 993])  # a last batch of 8, of 9, of 1
@pytest.mark.parametrize("group", [True, False])
def test_processes_share_every_global_batch_and_none_is_left_empty(rows, group):
    lengths = [i % 37 for i in range(rows)]
    one = EpochBatchSampler(lengths, 16, seed=3, group_by_length=group)
    shards = [
        EpochBatchSampler(lengths, 16, 3, group_by_length=group, num_processes=2, process_index=i)
        for i in range(2)
    ]
    for s in (one, *shards):
        s.set_epoch(4)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == len(shards[0]) and all(a) and all(b)
    assert [x + y for x, y in zip(a, b)] == list(shards[0].batches())
    assert sorted(i for batch in a + b for i in batch) == list(range(rows))  # nothing lost
    assert max(abs(len(x) - len(y)) for x, y in zip(a, b)) <= 1
    if rows != 993:  # one process keeps its last batch of 1; two merge it into another
        assert list(one) == list(shards[0].batches())


def test_length_grouping_reduces_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 160) for _ in range(2000)]

    def padded(group):
        s = EpochBatchSampler(lengths, 16, seed=0, group_by_length=group)
        return sum(len(b) * max(lengths[i] for i in b) for b in s)

    assert padded(True) < 0.7 * padded(False)


def test_encode_cache_returns_the_same_and_survives_damage(tok, tmp_path):
    from weibo_senti.features import encode_cached

    texts = ["好差", "好" * 50, "", "我你他"]
    fresh = encode(tok, texts)
    assert encode_cached(tok, texts, cache_dir=tmp_path) == fresh
    (entry,) = tmp_path.iterdir()
    assert encode_cached(tok, texts, cache_dir=tmp_path) == fresh  # from the cache
    tok.model_max_length = 12
    try:
        assert encode_cached(tok, texts, cache_dir=tmp_path) == encode(tok, texts) != fresh
        assert len(list(tmp_path.iterdir())) == 2  # the max length is part of the key
    finally:
        tok.model_max_length = 10
    entry.write_bytes(b"damaged")
    assert encode_cached(tok, texts, cache_dir=tmp_path) == fresh


def test_encode_equals_the_stock_tokenizer_call_even_past_the_pre_cut(tok):
    # 200 letters per word: each word is one [UNK] token, so the 160-character pre-cut
    # would keep too few tokens; encode notices and tokenizes the whole text.
    texts = ["好" * 5, "好" * 30, " ".join(["a" * 200] * 30), "差 " * 100]
    ids, cut = encode(tok, texts)
    assert ids == tok(texts, truncation=True)["input_ids"]
    assert cut == [False, True, True, True]


def test_emoticon_dropout_is_seeded_changes_per_epoch_and_serves_both_versions():
    from weibo_senti.features import EncodedDataset

    ids = [[1, i, 2] for i in range(1000)]
    stripped = [[1, 2] for _ in range(1000)]

    def served(epoch, seed=7, dropout=0.3):
        data = EncodedDataset(ids, [0] * 1000, stripped, dropout, seed)
        data.set_epoch(epoch)
        return [data[i][0] == stripped[i] for i in range(1000)]

    first = served(0)
    assert first == served(0)  # seeded
    assert first != served(1) and first != served(0, seed=8)  # afresh each epoch
    assert 250 < sum(first) < 350  # about the share asked for
    assert sum(served(0, dropout=0.0)) == 0 and sum(served(0, dropout=1.0)) == 1000
    assert sum(EncodedDataset(ids, [0] * 1000)[i][0] == ids[i] for i in range(1000)) == 1000
