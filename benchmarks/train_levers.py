"""Training levers on this CPU, A/B in one process: the default fp32 step against the same
step under torch.compile (inductor), LoRA on GPT-2 small's shape, batches of 16 real posts
padded to 64 tokens, rounds alternating. Whether compiling pays here, and its one-time cost.

    python benchmarks/train_levers.py --isa avx2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench import build_model, fast_tokenizer, load_texts
from cpu_isa import describe, restart_with_isa


def make_step(model, params, opt):
    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


def setup(args, compiled: bool):
    import torch

    from weibo_senti import TrainConfig, inference, modeling
    from weibo_senti.train import cpu_training_speedups, make_optimizer

    torch.manual_seed(0)
    cfg = TrainConfig(method=args.method)
    model = modeling.apply_method(inference.fuse_gelu(build_model(args)), cfg)
    from types import SimpleNamespace

    acc = SimpleNamespace(device=torch.device("cpu"), num_processes=1, mixed_precision="no")
    cpu_training_speedups(model, cfg, acc)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg)
    return make_step(torch.compile(model) if compiled else model, params, opt)


def batches(args, n: int) -> list[dict]:
    import torch

    texts, labels = load_texts(args, 16 * n)
    enc = fast_tokenizer(args)(texts, truncation=True, max_length=64, padding="max_length")
    ids, mask = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
    return [
        {"input_ids": ids[i : i + 16], "attention_mask": mask[i : i + 16],
         "labels": torch.tensor(labels[i : i + 16])}
        for i in range(0, 16 * n, 16)
    ]  # fmt: skip


def main() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared"
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--isa", default="native")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--tokenizer", default=str(shared / "models/gpt2-mini-zh"))
    ap.add_argument("--texts", default=str(shared / "data/weibo_senti_100k/dev.csv"))
    ap.add_argument("--base-model", default=None)
    ap.add_argument("--out", default="benchmarks/train-levers.json")
    args = ap.parse_args()
    restart_with_isa(args.isa)
    from weibo_senti.cli import configure_process

    configure_process()
    data = batches(args, args.steps)
    sides, first = {}, {}
    for name, compiled in (("eager", False), ("torch.compile", True)):
        sides[name] = setup(args, compiled)
        t0 = time.perf_counter()
        sides[name](data[0])  # the first step: compiling, for torch.compile
        first[name] = time.perf_counter() - t0
    times = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            for b in data:
                sides[name](b)
            times[name].append(16 * len(data) / (time.perf_counter() - t0))
    res = {
        "machine": describe(),
        "method": args.method,
        "samples_per_s": {k: statistics.median(v) for k, v in times.items()},
        "rounds": times,
        "first_step_s": first,
    }
    Path(args.out).write_text(json.dumps(res, indent=2))
    e, c = res["samples_per_s"]["eager"], res["samples_per_s"]["torch.compile"]
    print(
        f"{res['machine']['label']}: eager {e:.2f}, compiled {c:.2f} samples/s ({c / e:.2f}x); "
        f"first step {first['eager']:.1f} s vs {first['torch.compile']:.1f} s"
    )


if __name__ == "__main__":
    main()
