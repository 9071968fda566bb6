"""Memory and switch time: one GPT-2 small base + N LoRA adapters versus N merged models.

    python benchmarks/adapters.py          # N = 1, 4, 16; random weights (values do not matter)

Each measurement runs in a fresh process; memory is the process's resident set after loading.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_runs(root: Path, tokenizer_dir: str, n: int) -> tuple[Path, list[Path]]:
    """A random GPT-2 small base folder and n LoRA runs with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import GPT2LMHeadModel

    from weibo_senti import TrainConfig, modeling, runfolder
    from weibo_senti.runfolder import RunInfo

    torch.manual_seed(0)
    base = root / "base"
    cfg = TrainConfig(method="lora", base_model=str(base))
    GPT2LMHeadModel(modeling.gpt2_small_config()).save_pretrained(str(base))
    tok = runfolder.load_tokenizer(tokenizer_dir, max_length=cfg.max_length)
    runfolder.save_tokenizer(tok, base)
    model = modeling.load_base_classifier(base, tok)
    peft = get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=8,
            lora_alpha=32,
            target_modules=["c_attn", "c_proj"],
            fan_in_fan_out=True,
        ),
    )
    trainable, total = modeling.count_parameters(peft)
    info = RunInfo(
        method="lora",
        base=runfolder.base_ref(cfg.base_model, base, model.config),
        max_length=cfg.max_length,
        pad_token_id=tok.pad_token_id,
        text_column=cfg.text_column,
        complete=True,
        precision="fp32",
        trainable_params=trainable,
        all_params=total,
    )
    runs = []
    for i in range(n):
        for name, p in peft.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                torch.nn.init.normal_(p, std=0.02)
        run = root / f"run{i}"
        runfolder.save_weights(peft, "lora", run, cfg.base_model)
        runfolder.save_tokenizer(tok, run)
        runfolder.write_info(run, info)
        runs.append(run)
    return base, runs


def shared_base(runs: list[Path]) -> dict:
    from weibo_senti import SentimentClassifier
    from weibo_senti.cli import configure_process

    configure_process()  # a fresh process: quiet transformers, every core

    t0 = time.perf_counter()
    clf = own_memory(SentimentClassifier.load(runs[0], precision="fp32", merge=False, name="t0"))
    load_s = time.perf_counter() - t0
    add = []
    for i, run in enumerate(runs[1:], start=1):
        t0 = time.perf_counter()
        clf.add_adapter(f"t{i}", run)
        add.append(time.perf_counter() - t0)
    mem = rss_mb()
    switch = []
    text = ["今天天气真好，心情也很好[哈哈]"]
    for i in range(50):
        name = f"t{i % len(runs)}"
        t0 = time.perf_counter()
        clf.use(name)
        switch.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(20):
        clf.predict(text, adapter=f"t{i % len(runs)}")
    predict_switching = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for _ in range(20):
        clf.predict(text)
    predict_fixed = (time.perf_counter() - t0) / 20
    return {
        "rss_mb": mem,
        "first_load_s": load_s,
        "add_adapter_ms": 1000 * statistics.median(add) if add else None,
        "switch_ms": 1000 * statistics.median(switch),
        "predict_one_text_switching_ms": 1000 * predict_switching,
        "predict_one_text_same_adapter_ms": 1000 * predict_fixed,
    }


def merged_models(merged: Path, n: int) -> dict:
    from weibo_senti import SentimentClassifier
    from weibo_senti.cli import configure_process

    configure_process()

    models = [own_memory(SentimentClassifier.load(merged, precision="fp32")) for _ in range(n)]
    return {"rss_mb": rss_mb(), "models": len(models)}


def own_memory(clf):
    """safetensors maps files into memory; N loads of one file would share pages. N different
    models would not: give every tensor its own memory, as a distinct model's would be."""
    import torch

    with torch.no_grad():
        for t in list(clf.model.parameters()) + list(clf.model.buffers()):
            t.data = t.data.clone()
    return clf


def isolated(fn, **kw):
    from weibo_senti.isolate import run_isolated

    return run_isolated(fn, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokenizer", default=str(SHARED / "models/gpt2-mini-zh"))
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--out", default="benchmarks/adapters.json")
    args = ap.parse_args()
    from weibo_senti.cli import configure_process
    from weibo_senti.merge import merge

    configure_process()

    root = Path(tempfile.mkdtemp(prefix="adapters-bench-"))
    base, runs = make_runs(root, args.tokenizer, max(args.counts))
    merged = merge(runs[0], root / "merged")
    adapter_mb = (runs[0] / "adapter_model.safetensors").stat().st_size / 2**20
    merged_mb = (merged / "model.safetensors").stat().st_size / 2**20
    res = {"adapter_file_mb": adapter_mb, "merged_model_file_mb": merged_mb, "rows": []}
    for n in args.counts:
        a = isolated(shared_base, runs=runs[:n])
        b = isolated(merged_models, merged=merged, n=n)
        row = {"n": n, "shared": a, "merged_rss_mb": b["rss_mb"]}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    lines = [
        f"GPT-2 small shape, random weights; LoRA file {adapter_mb:.2f} MB, merged model "
        f"{merged_mb:.0f} MB.",
        "",
        "| N tasks | one base + N adapters (RSS MB) | N merged models (RSS MB) | add adapter "
        "(ms) | switch (ms) | 1 text, same adapter (ms) | 1 text, switching (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        s = r["shared"]
        add = f"{s['add_adapter_ms']:.0f}" if s["add_adapter_ms"] else "–"
        lines.append(
            f"| {r['n']} | {s['rss_mb']:.0f} | {r['merged_rss_mb']:.0f} | {add} "
            f"| {s['switch_ms']:.3f} | {s['predict_one_text_same_adapter_ms']:.1f} "
            f"| {s['predict_one_text_switching_ms']:.1f} |"
        )
    print("\n".join(lines))
    import shutil

    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
