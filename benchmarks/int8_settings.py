"""Which of ONNX Runtime's dynamic-int8 settings suits this CPU: weights per tensor or per
output channel, in 8 bits or 7 (reduce_range). Speed on GPT-2 small's shape (random weights),
agreement with fp32 on a trained run's dev posts; each setting through the product's own
batching (SentimentClassifier with its ort-int8 copy swapped), rounds interleaved.

    python benchmarks/int8_settings.py --isa avx2 --out benchmarks/int8-settings-avx2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench import load_texts, make_run
from cpu_isa import describe, restart_with_isa
from peer_onnxruntime import timed

SETTINGS = {  # name: (per_channel, reduce_range)
    "per-channel 7-bit (ours)": (True, True),
    "per-channel 8-bit": (True, False),
    "per-tensor 7-bit": (False, True),
    "per-tensor 8-bit": (False, False),
}


def variants(clf, work: Path) -> dict:
    """Each setting's int8 graph of the classifier's model, as ORT sessions."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from weibo_senti import onnx_runtime

    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    onnx_runtime.export_fp32(clf._plain_model("onnxruntime").eval(), fp32)
    out = {}
    for name, (per_channel, reduce_range) in SETTINGS.items():
        path = work / f"{per_channel}-{reduce_range}.onnx"
        quantize_dynamic(
            fp32, path, weight_type=QuantType.QInt8, per_channel=per_channel,
            reduce_range=reduce_range, op_types_to_quantize=["MatMul"],
        )  # fmt: skip
        out[name] = onnx_runtime.OrtClassifier(path, threads=clf_threads())
    return out


def clf_threads() -> int:
    import torch

    return torch.get_num_threads()


def load(run):
    from weibo_senti.predict import SentimentClassifier

    return SentimentClassifier.load(run, precision="int8", engine="onnxruntime")


def agreement(args, work: Path) -> dict:
    import numpy as np

    from weibo_senti.predict import SentimentClassifier

    texts, _ = load_texts(args, args.agreement_texts, seed=2)
    want = SentimentClassifier.load(args.agreement_run, precision="fp32", engine="torch")
    want = want.predict_proba(texts)
    clf, out = load(args.agreement_run), {}
    for name, session in variants(clf, work / "agree").items():
        clf._copies["ort-int8"] = session
        got = clf.predict_proba(texts)
        out[name] = {
            "label_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(got - want).max()),
        }
    return out


def speed(args, work: Path) -> dict:
    texts, _ = load_texts(args, args.infer_texts, seed=1)
    clf = load(make_run(args, work / "run"))
    sessions = variants(clf, work / "speed")
    rounds: dict[str, list[dict]] = {name: [] for name in sessions}
    for i in range(args.rounds):
        for name in list(sessions)[:: 1 if i % 2 == 0 else -1]:
            clf._copies["ort-int8"] = sessions[name]
            clf.predict_logits(texts[:8])  # warm-up
            rounds[name].append(timed(lambda b: clf.predict_logits(b)[0], texts, 40)[0])
    return {
        name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for name, rows in rounds.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--isa", default="native")
    ap.add_argument("--agreement-run", default="runs/learn/lora-0")
    ap.add_argument("--agreement-texts", type=int, default=2000)
    ap.add_argument("--infer-texts", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--tokenizer",
        default=str(Path(__file__).resolve().parents[2] / "shared/models/gpt2-mini-zh"),
    )
    ap.add_argument(
        "--texts",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/weibo_senti_100k/dev.csv"),
    )
    ap.add_argument("--base-model", default=None)
    ap.add_argument("--out", default="benchmarks/int8-settings.json")
    args = ap.parse_args()
    restart_with_isa(args.isa)
    with tempfile.TemporaryDirectory(prefix="int8-settings-") as tmp:
        res = {"machine": describe(), "speed": speed(args, Path(tmp))}
        res["agreement"] = agreement(args, Path(tmp))
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"{res['machine']['label']}; GPT-2 small shape, {args.rounds} interleaved rounds")
    print("| setting | samples/s | lone p50 ms | equal labels | max |ΔP| |")
    print("|---|---|---|---|---|")
    for name, s in res["speed"].items():
        a = res["agreement"][name]
        print(
            f"| {name} | {s['samples_per_s']:.1f} | {s['latency_p50_ms']:.1f} "
            f"| {100 * a['label_agreement']:.2f}% | {a['max_prob_diff']:.4f} |"
        )


if __name__ == "__main__":
    main()
