"""The ONNX Runtime peer for bench.py: the merged model exported by Hugging Face optimum, run by
ONNX Runtime the way an advanced user would on a CPU.

It runs in its own virtual environment, because optimum-onnx pins transformers < 5:

    python3 -m venv .venv-ort && . .venv-ort/bin/activate
    pip install torch==2.13.0 "optimum-onnx[onnxruntime]"
    python benchmarks/bench.py --ort-python .venv-ort/bin/python

    python benchmarks/peer_onnxruntime.py RUN_FOLDER TEXTS.json WORKDIR   # what bench.py calls

Prints one JSON object: export time, and for fp32 and dynamic int8 (optimum's ORTQuantizer,
with its config for the CPU: AutoQuantizationConfig.avx512_vnni, or .avx2 on AVX2-only CPUs) the batch rate, the lone-post latency and the logits of the texts, so that
bench.py can check agreement with its own fp32 logits.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def export(run: Path, out: Path) -> float:
    from optimum.exporters.onnx import main_export

    t0 = time.perf_counter()
    if not (out / "model.onnx").is_file():
        main_export(str(run), output=str(out), task="text-classification", do_validation=False)
    return time.perf_counter() - t0


def quantize(fp32_dir: Path, out: Path, config_name: str = "avx512_vnni") -> float:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    t0 = time.perf_counter()
    if not (out / "model_quantized.onnx").is_file():
        quantizer = ORTQuantizer.from_pretrained(str(fp32_dir))
        make_config = getattr(AutoQuantizationConfig, config_name)  # avx512_vnni or avx2
        config = make_config(is_static=False, per_channel=True)
        quantizer.quantize(save_dir=str(out), quantization_config=config)
    return time.perf_counter() - t0


def predict_sorted(tok, run, texts: list[str], batch_size: int = 16):
    """The advanced user's batching: sorted by length, padded to the longest of each batch.
    ``run(encoding)`` answers a batch's logits."""
    import numpy as np

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = np.zeros((len(texts), 2), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = tok(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=160,
            return_tensors="np",
        )
        logits[idx] = run(enc)
    return logits


def timed(predict, texts: list[str], latency_texts: int):
    """(batch rate over ``texts`` and the latency of its first ``latency_texts`` alone, what
    the batch call answered). Also bench.py's timing of every path."""
    t0 = time.perf_counter()
    answer = predict(texts)
    batch_s = time.perf_counter() - t0
    lat = []
    for t in texts[:latency_texts]:
        t0 = time.perf_counter()
        predict([t])
        lat.append(time.perf_counter() - t0)
    row = {
        "samples_per_s": len(texts) / batch_s,
        "latency_p50_ms": 1000 * statistics.median(lat),
        "latency_p95_ms": 1000 * statistics.quantiles(lat, n=20)[18],
    }
    return row, answer


def measure(model_dir: Path, file_name: str, texts: list[str], latency_texts: int) -> dict:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    model = ORTModelForSequenceClassification.from_pretrained(str(model_dir), file_name=file_name)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert len(tok) == 21128, len(tok)  # the vocab-size trap

    def predict(batch_texts: list[str]):
        return predict_sorted(tok, lambda enc: model(**enc).logits, batch_texts)

    predict(texts[:8])  # warm-up
    row, logits = timed(predict, texts, latency_texts)
    return row | {"logits": logits.tolist()}


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    run, texts_file, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    spec = json.loads(texts_file.read_text(encoding="utf-8"))
    texts, latency_texts = spec["texts"], spec["latency_texts"]
    fp32_dir, int8_dir = work / "onnx-fp32", work / "onnx-int8"
    config = spec.get("int8_config", "avx512_vnni")
    out = {"export_s": export(run, fp32_dir), "quantize_s": quantize(fp32_dir, int8_dir, config)}
    out["int8_config"] = config
    out["fp32"] = measure(fp32_dir, "model.onnx", texts, latency_texts)
    out["int8"] = measure(int8_dir, "model_quantized.onnx", texts, latency_texts)
    import onnxruntime
    import optimum.version

    out["versions"] = {
        "onnxruntime": onnxruntime.__version__,
        "optimum": optimum.version.__version__,
    }
    out["fp32"]["peak_rss_mb"] = out["int8"]["peak_rss_mb"] = peak_rss_mb()  # both, one process
    print(json.dumps(out))


if __name__ == "__main__":
    main()
