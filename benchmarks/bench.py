"""Speed benchmark: the seeds' reference procedure against weibo-senti, same model, same texts.

    python benchmarks/bench.py                      # GPT-2 small shape, random weights
    python benchmarks/bench.py --quick              # a smoke run in a minute
    python benchmarks/bench.py --repeats 3          # the goal rows only, interleaved, medians

Every phase runs in a fresh process so its peak RSS is its own. The reference procedure is
re-implemented here as the seeds wrote it: the slow Python BertTokenizer inside
Dataset.__getitem__, every sample padded to 128, fp32, batch 16, no length grouping, and
prediction one text at a time, also padded to 128.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

from cpu_isa import describe, restart_with_isa  # same folder
from peer_onnxruntime import predict_sorted, timed  # same folder: one timing for all

SHARED = Path(__file__).resolve().parents[2] / "shared"


# ----------------------------------------------------------------------------- shared helpers
def build_model(args):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    if args.base_model:
        from weibo_senti import TrainConfig, modeling, runfolder

        tok = runfolder.load_tokenizer(args.base_model, max_length=TrainConfig().max_length)
        return modeling.load_base_classifier(Path(args.base_model), tok)
    from weibo_senti.modeling import gpt2_small_config

    config = gpt2_small_config()
    return AutoModelForSequenceClassification.from_config(config)


def load_texts(args, n, seed=0):
    from weibo_senti.data import read_labelled

    ex = read_labelled(args.texts)
    idx = random.Random(seed).sample(range(len(ex)), n)
    return [ex.texts[i] for i in idx], [ex.labels[i] for i in idx]


def peak_rss_mb() -> float:
    from weibo_senti.isolate import peak_rss_mb as peak

    return peak()


def fast_tokenizer(args):
    """weibo-senti's tokenizer, with its rules for the default max length (160 tokens)."""
    from weibo_senti import TrainConfig, runfolder

    return runfolder.load_tokenizer(args.tokenizer, max_length=TrainConfig().max_length)


def configure_process() -> None:
    """Every phase runs in a fresh process: quiet transformers, every core (as the CLI does)."""
    from weibo_senti.cli import configure_process as configure

    configure()


def slow_tokenizer(args):
    from transformers.models.bert import BertTokenizerLegacy

    tok = BertTokenizerLegacy(vocab_file=str(Path(args.tokenizer) / "vocab.txt"))
    assert len(tok) == 21128, len(tok)  # the vocab-size trap
    return tok


# ----------------------------------------------------------------------------- training
def train_phase(args, method, ours, precision="no", checkpointing=False):
    import torch
    from transformers import get_linear_schedule_with_warmup

    from weibo_senti import TrainConfig
    from weibo_senti.train import make_optimizer

    configure_process()
    torch.manual_seed(0)
    cfg = TrainConfig(method=method)
    model = train_model(args, cfg, ours, precision, checkpointing)
    steps = args.warmup_steps + args.train_steps
    # Both procedures make exactly one epoch over the same pool of real posts, so ours pays
    # the padding its length grouping leaves over the whole pool, not over a lucky sample.
    texts, labels = load_texts(args, steps * 16)
    loader, tokenize_s = (ours_loader if ours else seed_loader)(args, texts, labels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg) if ours else torch.optim.AdamW(params, lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, 0, 1000)
    amp = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16"
        else torch.autocast("cpu", enabled=False)
    )
    times, tokens, it = [], 0, iter(loader)
    for step in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        with amp:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup_steps:
            times.append(time.perf_counter() - t0)
            tokens += int(batch["input_ids"].numel())
    samples = 16 * len(times)
    return {
        "samples_per_s": samples / sum(times),
        "padded_tokens_per_sample": tokens / samples,
        "tokenize_s": tokenize_s,
        "n_texts_tokenized": len(texts) if ours else 0,
        "peak_rss_mb": peak_rss_mb(),
    }


def train_model(args, cfg, ours: bool, precision: str, checkpointing: bool):
    """The benchmark model with the method applied; ours with train.setup's CPU speedups."""
    from types import SimpleNamespace

    import torch

    from weibo_senti import inference, modeling
    from weibo_senti.train import cpu_training_speedups, enable_checkpointing

    base = build_model(args)
    if checkpointing:
        enable_checkpointing(base)
    model = modeling.apply_method(inference.fuse_gelu(base) if ours else base, cfg)
    if ours:  # as train.setup does on a CPU
        acc = SimpleNamespace(
            device=torch.device("cpu"), num_processes=1, mixed_precision=precision
        )
        cpu_training_speedups(model, cfg, acc)
    return model.train()


def ours_loader(args, texts: list[str], labels: list[int]):
    """Tokenized once, batched, by the fast tokenizer; length-grouped batches of 16."""
    import torch

    from weibo_senti.features import Collator, EncodedDataset, EpochBatchSampler, encode

    tok = fast_tokenizer(args)  # model_max_length = cfg.max_length
    t0 = time.perf_counter()
    ids, _ = encode(tok, texts)
    tokenize_s = time.perf_counter() - t0
    sampler = EpochBatchSampler([len(x) for x in ids], 16, seed=0, group_by_length=True)
    loader = torch.utils.data.DataLoader(
        EncodedDataset(ids, labels), batch_sampler=sampler, collate_fn=Collator(0)
    )
    return loader, tokenize_s


def seed_loader(args, texts: list[str], labels: list[int]):
    """The seeds' data path: the slow tokenizer in __getitem__, every sample padded to 128."""
    import torch

    tok = slow_tokenizer(args)

    class SeedDataset(torch.utils.data.Dataset):  # as in the seeds' scripts
        def __len__(self):
            return len(texts)

        def __getitem__(self, i):
            enc = tok(
                texts[i], padding="max_length", truncation=True, max_length=128,
                return_tensors="pt",
            )  # fmt: skip
            return {
                "input_ids": enc["input_ids"][0],
                "attention_mask": enc["attention_mask"][0],
                "labels": torch.tensor(labels[i]),
            }

    return torch.utils.data.DataLoader(SeedDataset(), batch_size=16, shuffle=True), 0.0


# ----------------------------------------------------------------------------- inference
# (row name, precision, CPU engine): every path the product has, and its default last.
OUR_PATHS = [
    ("fp32 torch", "fp32", "torch"),
    ("fp32 onnxruntime", "fp32", "onnxruntime"),
    ("bf16", "bf16", "torch"),
    ("int8 torch", "int8", "torch"),
    ("int8 onnxruntime", "int8", "onnxruntime"),
    ("auto (default)", "auto", "auto"),
]
PEER_ORT = Path(__file__).with_name("peer_onnxruntime.py")


def our_paths() -> list[tuple[str, str, str]]:
    """OUR_PATHS, less bf16 where the CPU has no fast bf16: there its autocast kernels run
    ~170x slower than fp32 (a 256-post row would take 40 minutes; auto's own timing and
    mlp_matmul_gflops record it)."""
    from weibo_senti.inference import cpu_has_fast_bf16

    return [p for p in OUR_PATHS if p[1] != "bf16" or cpu_has_fast_bf16()]


def ort_peer_phase(
    args, run: Path, texts: list[str], keep: Path | None = None
) -> tuple[dict, dict]:
    """optimum's export of the same model, run by ONNX Runtime, in its own environment:
    (rows as infer_phase's, library versions). ``keep``: export into this folder and leave it
    (onnx-fp32/, onnx-int8/), else into a temporary one, removed."""
    import shutil
    import subprocess
    import tempfile

    work = keep or Path(tempfile.mkdtemp(prefix="bench-ort-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "texts.json"
    # the peer's quantization config for the ISA its libraries see (the same mask applies)
    config = "avx512_vnni" if describe()["isa_seen"] in ("AVX512", "AMX") else "avx2"
    spec.write_text(
        json.dumps({"texts": texts, "latency_texts": args.latency_texts, "int8_config": config})
    )
    try:
        done = subprocess.run(
            [args.ort_python, str(PEER_ORT), str(run), str(spec), str(work)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)  # optimum's export and int8 copy: 0.5 GB
    out = json.loads(done.stdout.strip().splitlines()[-1])
    tokens = real_token_count(args, texts)
    rows = {}
    for precision in ("fp32", "int8"):
        r = out[precision]
        r.pop("logits")
        r["real_tokens_per_s"] = r["samples_per_s"] * tokens / len(texts)
        rows[f"peer: optimum + ORT {precision}"] = r
    rows["peer: optimum + ORT fp32"]["export_s"] = out["export_s"]
    rows["peer: optimum + ORT int8"]["quantize_s"] = out["quantize_s"]
    return rows, out["versions"] | {"int8_config": out["int8_config"]}


def real_token_count(args, texts: list[str]) -> int:
    """Tokens of the texts as read (no padding), at weibo-senti's max length of 160."""
    enc = fast_tokenizer(args)(texts, truncation=True, max_length=160)["input_ids"]
    return sum(len(x) for x in enc)


def make_run(args, folder: Path) -> Path:
    """Save the benchmark model as a weibo-senti run, so `ours` is the product's own path."""
    from weibo_senti import modeling, runfolder
    from weibo_senti.runfolder import BaseRef, RunInfo

    model = build_model(args)
    tok = fast_tokenizer(args)
    trainable, total = modeling.count_parameters(model)
    runfolder.save_weights(model, "full", folder, "bench")
    runfolder.save_tokenizer(tok, folder)
    info = RunInfo(
        method="full",
        base=BaseRef(name="bench", fingerprint=runfolder.fingerprint(model.config)),
        max_length=tok.model_max_length,
        pad_token_id=tok.pad_token_id,
        complete=True,
        precision="fp32",
        trainable_params=trainable,
        all_params=total,
    )
    runfolder.write_info(folder, info)
    return folder


def infer_phase(args, run, ours, precision="fp32", engine="torch"):
    import numpy as np
    import torch

    configure_process()
    texts, _ = load_texts(args, args.infer_texts, seed=1)
    if ours:
        from weibo_senti.predict import SentimentClassifier

        clf = SentimentClassifier.load(run, precision=precision, engine=engine)

        def batch_predict(batch_texts):
            return clf.predict_logits(batch_texts)[0]
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(run)).eval()
        tok = slow_tokenizer(args)

        def one(text):  # the seeds' predict(): one text, padded to 128, no_grad
            enc = tok(
                text, padding="max_length", truncation=True, max_length=128, return_tensors="pt"
            )
            with torch.no_grad():
                return model(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                ).logits.numpy()

        def batch_predict(batch_texts):
            return np.concatenate([one(t) for t in batch_texts])

    batch_predict(texts[:8])  # warm-up
    row, _ = timed(batch_predict, texts, args.latency_texts)
    if ours:
        row["choice"] = clf.choice.summary()
    tokens_per_post = real_token_count(args, texts) / len(texts)
    return row | {
        "real_tokens_per_s": row["samples_per_s"] * tokens_per_post,
        "peak_rss_mb": peak_rss_mb(),
    }


def agreement_phase(args):
    """fp32 against each fast path, on a *trained* run (random weights give coin-flip labels)."""
    import numpy as np

    from weibo_senti.predict import SentimentClassifier

    configure_process()
    texts, _ = load_texts(args, args.agreement_texts, seed=2)
    ref = SentimentClassifier.load(args.agreement_run, merge=False, precision="fp32")
    ref = ref.predict_proba(texts)
    out = {"run": str(args.agreement_run), "n": len(texts)}
    for name, kw in [(name, dict(precision=p, engine=e)) for name, p, e in our_paths()]:
        p = SentimentClassifier.load(args.agreement_run, **kw).predict_proba(texts)
        out[name] = {
            "label_agreement": float((p.argmax(1) == ref.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(p - ref).max()),
        }
    return out


def matmul_peak_gflops() -> float:
    """The fp32 rate this CPU reaches on a large matmul: the ceiling for the FLOP ratio."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t0, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - t0) / 1e9


def mlp_matmul_gflops(dtype_name: str) -> float:
    """GPT-2's MLP matmul (512 tokens x 768 x 3072) in fp32 or bf16: whether bf16 autocast can
    pay here (on an AVX2-only CPU its kernels ran 200x slower than fp32's)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(512, 768, dtype=dtype), torch.randn(768, 3072, dtype=dtype)
    a @ b
    t0, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - t0 < 0.5:
        a @ b
        n += 1
    return 2 * 512 * 768 * 3072 * n / (time.perf_counter() - t0) / 1e9


# ----------------------------------------------------------------------------- driver
def isolated(fn, args, **kw):
    from weibo_senti.isolate import run_isolated

    return run_isolated(fn, args, **kw)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-model", help="a real base instead of random GPT-2 small weights")
    ap.add_argument("--tokenizer", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--texts", default=str(SHARED / "data/weibo_senti_100k/dev.csv"))
    ap.add_argument("--methods", nargs="+", default=["lora", "adapter", "full"])
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--infer-texts", type=int, default=256)
    ap.add_argument("--latency-texts", type=int, default=40)
    ap.add_argument("--agreement-run", default="runs/learn/lora-0")
    ap.add_argument("--agreement-texts", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="tiny counts, for a smoke run")
    ap.add_argument(
        "--agreement-only",
        action="store_true",
        help="redo only the agreement figures of an existing --out file",
    )
    ap.add_argument("--checkpointing", action="store_true", help="also train with it on")
    ap.add_argument("--train-only", action="store_true", help="only the training phases")
    ap.add_argument(
        "--infer-only",
        action="store_true",
        help="only the inference phases; an existing --out file keeps its training rows",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="N > 1: only the rows the goals name, N interleaved rounds, medians and spread",
    )
    ap.add_argument(
        "--peer-ab",
        type=int,
        default=0,
        metavar="N",
        help="only ours (default settings) against the peer's int8 graph, N alternating "
        "rounds in one process",
    )
    ap.add_argument(
        "--ort-python",
        default=".venv-ort/bin/python",
        help="python of an environment with optimum-onnx[onnxruntime] (the ORT peer)",
    )
    ap.add_argument(
        "--isa",
        default="native",
        help="native, or avx2: the libraries see an AVX2-only CPU (cpu_isa.py)",
    )
    ap.add_argument("--out", default="benchmarks/results.json")
    args = ap.parse_args()
    if args.quick:
        args.train_steps, args.infer_texts, args.latency_texts = 2, 32, 8
        args.agreement_texts = 200
    return args


def write(args, res: dict, table: str) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(table)


def main():
    args = parse_args()
    restart_with_isa(args.isa)
    configure_process()
    if args.repeats > 1:
        res = repeated_goal_rows(args)
        return write(args, res, repeats_table(res))
    if args.peer_ab:
        res = peer_ab(args)
        return write(args, res, peer_ab_table(res))
    if args.agreement_only:
        res = json.loads(Path(args.out).read_text())
        res["agreement"] = isolated(agreement_phase, args)
        return write(args, res, markdown(res))
    res = {"machine": machine_info(), "model": args.base_model or GPT2_SMALL, "train": {}}
    if args.infer_only and Path(args.out).is_file():
        res["train"] = json.loads(Path(args.out).read_text()).get("train", {})
    else:
        res["train"] = train_rows(args)
    if args.train_only:
        return write(args, res, train_table(res))
    res["infer"], res["ort_versions"] = infer_rows(args)
    add_useful_flops(res)
    if Path(args.agreement_run).is_dir():
        res["agreement"] = isolated(agreement_phase, args)
        print("agreement", json.dumps(res["agreement"]), flush=True)
    else:
        print(
            f"agreement skipped: no trained run at {args.agreement_run} (make one with "
            "scripts/integration.py, or pass --agreement-run)",
            flush=True,
        )
    write(args, res, markdown(res))


GPT2_SMALL = "GPT-2 small shape (12x768, vocab 21,128), random weights"


def machine_info() -> dict:
    import torch

    from weibo_senti.inference import cpu_has_fast_bf16

    return {
        **describe(),
        "cpu": platform.processor() or platform.machine(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "fast_bf16": cpu_has_fast_bf16(),
        "fp32_matmul_gflops": round(matmul_peak_gflops(), 1),
        "mlp_matmul_gflops": {d: round(mlp_matmul_gflops(d), 1) for d in ("float32", "bfloat16")},
    }


def train_rows(args) -> dict:
    """Each method: the reference, then ours at each precision the CPU is fast at."""
    from weibo_senti.inference import cpu_has_fast_bf16

    bf16 = ["no", "bf16"] if cpu_has_fast_bf16() else ["no"]
    rows = {}
    for method in args.methods:
        ref = isolated(train_phase, args, method=method, ours=False)
        row = {"reference": ref}
        variants = [(p, False) for p in bf16] + [(p, True) for p in bf16 if args.checkpointing]
        for prec, gc in variants:
            ours = isolated(
                train_phase, args, method=method, ours=True, precision=prec, checkpointing=gc
            )
            ours["speedup"] = ours["samples_per_s"] / ref["samples_per_s"]
            row[f"ours_{prec}" + ("_checkpointing" if gc else "")] = ours
        rows[method] = row
        print(method, json.dumps(row), flush=True)
    return rows


def infer_rows(args) -> tuple[dict, dict | None]:
    """The reference, each of our paths and the ORT peer on one saved run; ratios to the
    reference. Also the peer's library versions (None without its environment)."""
    import shutil
    import tempfile

    run = make_run(args, Path(tempfile.mkdtemp(prefix="bench-run-")))
    try:
        ref = isolated(infer_phase, args, run=run, ours=False)
        rows, versions = {}, None
        for name, prec, engine in our_paths():
            rows[name] = isolated(
                infer_phase, args, run=run, ours=True, precision=prec, engine=engine
            )
            print(name, json.dumps(rows[name]), flush=True)
        if Path(args.ort_python).is_file():
            texts, _ = load_texts(args, args.infer_texts, seed=1)  # the texts infer_phase times
            peer, versions = ort_peer_phase(args, run, texts)
            rows.update(peer)
            print("ORT peer", json.dumps(peer), flush=True)
        else:
            print(f"ORT peer skipped: no {args.ort_python} (see benchmarks/peer_onnxruntime.py)")
    finally:
        shutil.rmtree(run, ignore_errors=True)  # a GPT-2 small run: 0.5 GB
    for r in rows.values():
        r["throughput_speedup"] = r["samples_per_s"] / ref["samples_per_s"]
        r["latency_p50_ratio"] = r["latency_p50_ms"] / ref["latency_p50_ms"]
    return {"reference": ref, **rows}, versions


def add_useful_flops(res: dict) -> None:
    """Useful FLOPs: 2 x non-embedding parameters per real (unpadded) token, plus attention."""
    n_layer, d = 12, 768
    flops_per_token = 2 * 12 * n_layer * d * d + 2 * n_layer * 66 * d  # ~66 tokens/post
    for r in res["infer"].values():
        r["useful_gflops"] = r["real_tokens_per_s"] * flops_per_token / 1e9
        r["share_of_fp32_matmul_peak"] = r["useful_gflops"] / res["machine"]["fp32_matmul_gflops"]
        r.setdefault("peak_rss_mb", float("nan"))


# ----------------------------------------------------------------------------- repeats
# The rows the goals name. One run of each moves by up to ±15% between processes on a shared
# 2-core machine, so these run N times, interleaved (ref, ours, ref, ours, ...), and report the
# median of each and the spread of the per-round ratios.
GOAL_INFER = [("auto (default)", "auto", "auto"), ("fp32 (auto engine)", "fp32", "auto")]


def repeated_goal_rows(args) -> dict:
    import tempfile

    from weibo_senti.inference import cpu_has_fast_bf16

    precision = "bf16" if cpu_has_fast_bf16() else "no"  # what train's "auto" picks here
    rounds: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for method in args.methods:
            ref = isolated(train_phase, args, method=method, ours=False)
            ours = isolated(train_phase, args, method=method, ours=True, precision=precision)
            rounds.setdefault(f"train {method}: reference", []).append(ref)
            rounds.setdefault(f"train {method}: ours {precision}", []).append(ours)
            print(method, ref["samples_per_s"], ours["samples_per_s"], flush=True)
    if args.train_only:
        return {"repeats": args.repeats, "rounds": rounds, "summary": summarize(rounds)}
    import shutil

    run = make_run(args, Path(tempfile.mkdtemp(prefix="bench-run-")))
    try:
        repeated_infer_rows(args, run, rounds)
    finally:
        shutil.rmtree(run, ignore_errors=True)  # a GPT-2 small run: 0.5 GB
    return {"repeats": args.repeats, "rounds": rounds, "summary": summarize(rounds)}


def repeated_infer_rows(args, run: Path, rounds: dict[str, list[dict]]) -> None:
    texts, _ = load_texts(args, args.infer_texts, seed=1)
    for _ in range(args.repeats):
        rounds.setdefault("infer: reference", []).append(
            isolated(infer_phase, args, run=run, ours=False)
        )
        for name, prec, engine in GOAL_INFER:
            row = isolated(infer_phase, args, run=run, ours=True, precision=prec, engine=engine)
            rounds.setdefault(f"infer: {name}", []).append(row)
        if Path(args.ort_python).is_file():
            peer, _versions = ort_peer_phase(args, run, texts)
            for name, row in peer.items():
                rounds.setdefault(f"infer: {name}", []).append(row)
        print({k: round(v[-1]["samples_per_s"], 1) for k, v in rounds.items() if "infer" in k})


def summarize(rounds: dict[str, list[dict]]) -> dict:
    """Per row: median samples/s (and p50 latency), and against the reference of its phase
    the ratio of medians with the lowest and highest per-round ratio."""
    out = {}
    for name, rows in rounds.items():
        ref_rows = rounds[name.split(":")[0] + ": reference"]
        row = median_and_ratios(rows, ref_rows, "samples_per_s", "speedup")
        if "latency_p50_ms" in rows[0]:
            row |= median_and_ratios(rows, ref_rows, "latency_p50_ms", "latency_p50_ratio")
        out[name] = row
    return out


def median_and_ratios(rows: list[dict], ref_rows: list[dict], key: str, ratio: str) -> dict:
    median = statistics.median(r[key] for r in rows)
    per_round = [r[key] / q[key] for r, q in zip(rows, ref_rows)]
    return {
        key: median,
        ratio: median / statistics.median(q[key] for q in ref_rows),
        f"{ratio}_range": [min(per_round), max(per_round)],
    }


def repeats_table(res) -> str:
    lines = [
        f"Medians of {res['repeats']} interleaved rounds; [low–high] of the per-round ratios.",
        "",
        "| row | samples/s | vs reference | p50 ms | p50 vs reference |",
        "|---|---|---|---|---|",
    ]
    for name, r in res["summary"].items():
        lo, hi = r["speedup_range"]
        lat = "– | –"
        if "latency_p50_ms" in r:
            a, b = r["latency_p50_ratio_range"]
            lat = f"{r['latency_p50_ms']:.1f} | {r['latency_p50_ratio']:.2f} [{a:.2f}–{b:.2f}]"
        lines.append(
            f"| {name} | {r['samples_per_s']:.2f} | {r['speedup']:.2f}x [{lo:.2f}–{hi:.2f}] "
            f"| {lat} |"
        )
    return "\n".join(lines)


def train_table(res) -> str:
    lines = [
        "| method | variant | samples/s | vs reference | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for method, row in res["train"].items():
        for variant, r in row.items():
            lines.append(
                f"| {method} | {variant} | {r['samples_per_s']:.2f} | "
                f"{r.get('speedup', 1.0):.2f}x | {r['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def markdown(res) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m.get('label', m['cpu'])}, {m['cores']} threads, torch {m['torch']}, "
        f"AVX512-BF16/AMX: {m['fast_bf16']}, fp32 matmul {m['fp32_matmul_gflops']} GFLOP/s. "
        f"Model: {res['model']}.",
        "",
        "| training (samples/s) | reference | ours fp32 | ratio | ours bf16 | ratio | peak RSS ref / ours (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, row in res["train"].items():
        ref, o = row["reference"], row["ours_no"]
        b = row.get("ours_bf16")
        bf = f"{b['samples_per_s']:.2f} | {b['speedup']:.2f}x" if b else "– | –"
        lines.append(
            f"| {method} | {ref['samples_per_s']:.2f} | {o['samples_per_s']:.2f} "
            f"| {o['speedup']:.2f}x | {bf} "
        )
        lines[-1] += f"| {ref['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} |"
    lines += [
        "",
        "| inference | samples/s | ratio | p50 ms | p95 ms | p50 ratio | useful GFLOP/s | vs fp32 matmul peak | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["infer"].items():
        ratio = f"{r.get('throughput_speedup', 1):.2f}x"
        lat = f"{r.get('latency_p50_ratio', 1):.2f}"
        lines.append(
            f"| {name} | {r['samples_per_s']:.1f} | {ratio} | {r['latency_p50_ms']:.1f} "
            f"| {r['latency_p95_ms']:.1f} | {lat} | {r['useful_gflops']:.1f} "
            f"| {100 * r['share_of_fp32_matmul_peak']:.0f}% | {r['peak_rss_mb']:.0f} |"
        )
    infer = res["infer"]
    ours = infer.get("auto (default)")
    if ours and "choice" in ours:
        lines.append(f"\nThe default's measured choice: {ours['choice']}")
    for peer in ("peer: optimum + ORT fp32", "peer: optimum + ORT int8"):
        if ours and peer in infer:
            p = infer[peer]
            lines.append(
                f"\nDefault against {peer[6:]}: batch "
                f"{ours['samples_per_s'] / p['samples_per_s']:.2f}x its rate, lone post "
                f"{ours['latency_p50_ms'] / p['latency_p50_ms']:.2f}x its p50 latency."
            )
    if "agreement" in res:
        a = res["agreement"]
        lines += [
            "",
            f"Agreement with fp32 on {a['n']} dev texts ({a['run']}):",
            "",
            "| path | equal labels | max prob. diff |",
            "|---|---|---|",
        ]
        for k, v in a.items():
            if isinstance(v, dict):
                lines.append(
                    f"| {k} | {100 * v['label_agreement']:.2f}% | {v['max_prob_diff']:.4f} |"
                )
    return "\n".join(lines)


# ---------------------------------------------------------------------- peer A/B, one process
# Separate processes on this shared host land in one of two speed levels at random (README), so
# a phase-by-phase comparison with the peer can flip on a 15% difference. Here ours and the
# peer's int8 graph alternate in one process. The peer is run bare (an InferenceSession and
# its tokenizer, no optimum wrapper around them), which can only favour it.


def peer_ab(args) -> dict:
    import shutil
    import tempfile

    if not Path(args.ort_python).is_file():
        raise SystemExit(f"--peer-ab needs the peer's environment: no {args.ort_python}")
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    try:
        run = make_run(args, work / "run")
        texts, _ = load_texts(args, args.infer_texts, seed=1)
        _rows, versions = ort_peer_phase(args, run, texts, keep=work / "peer")
        rounds = isolated(peer_ab_phase, args, run=run, peer=work / "peer" / "onnx-int8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"versions": versions, "rounds": rounds}


def peer_ab_phase(args, run: Path, peer: Path) -> dict[str, list[dict]]:
    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer

    from weibo_senti.predict import SentimentClassifier

    configure_process()
    texts, _ = load_texts(args, args.infer_texts, seed=1)
    clf = SentimentClassifier.load(run)  # the defaults: what `predict` runs
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    session = ort.InferenceSession(str(peer / "model_quantized.onnx"), options)
    tok = AutoTokenizer.from_pretrained(str(peer))
    assert len(tok) == 21128, len(tok)  # the vocab-size trap

    def peer_predict(batch_texts: list[str]):  # as peer_onnxruntime.measure, minus optimum
        feed = ("input_ids", "attention_mask")
        return predict_sorted(
            tok, lambda enc: session.run(None, {k: enc[k] for k in feed})[0], batch_texts
        )

    paths = {
        "peer: optimum + ORT int8 (bare)": peer_predict,
        "ours auto (default)": lambda b: clf.predict_logits(b)[0],
    }
    for predict in paths.values():
        predict(texts[:8])  # warm-up (ours: the cached export's sessions)
    rounds: dict[str, list[dict]] = {}
    for i in range(args.peer_ab):
        order = list(paths.items())[:: 1 if i % 2 == 0 else -1]  # ABBA: drift hits both sides
        for name, predict in order:
            rounds.setdefault(name, []).append(timed(predict, texts, args.latency_texts)[0])
    rounds["ours auto (default)"][0]["choice"] = clf.choice.summary()
    if "ort-int8" in clf._copies:  # ["input_ids"]: the pooled graph, not the fallback
        rounds["ours auto (default)"][0]["graph_inputs"] = clf._copies["ort-int8"].inputs
    return rounds


def peer_ab_table(res) -> str:
    peer, ours = (
        res["rounds"]["peer: optimum + ORT int8 (bare)"],
        res["rounds"]["ours auto (default)"],
    )
    lines = [
        "| round | peer samples/s | ours samples/s | ours / peer | peer p50 ms | ours p50 ms | ours / peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (p, o) in enumerate(zip(peer, ours), 1):
        lines.append(
            f"| {i} | {p['samples_per_s']:.1f} | {o['samples_per_s']:.1f} | "
            f"{o['samples_per_s'] / p['samples_per_s']:.2f}x | {p['latency_p50_ms']:.1f} | "
            f"{o['latency_p50_ms']:.1f} | {o['latency_p50_ms'] / p['latency_p50_ms']:.2f} |"
        )
    rate = statistics.median(o["samples_per_s"] / p["samples_per_s"] for p, o in zip(peer, ours))
    lat = statistics.median(o["latency_p50_ms"] / p["latency_p50_ms"] for p, o in zip(peer, ours))
    lines.append(
        f"\nMedian of the per-round ratios: batch {rate:.2f}x the peer's rate, lone post "
        f"{lat:.2f}x its p50 latency."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
