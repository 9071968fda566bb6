"""CPU inference on ONNX Runtime: the model exported once with torch.onnx, a copy with int8
weights from ONNX Runtime's own dynamic quantizer, both run by its CPU kernels. Owner of the
.onnx files.

Why not optimum: optimum-onnx 0.1 pins transformers < 5. torch's exporter (dynamo, with
onnxscript) exports transformers 5's GPT-2 exactly (|Δlogit| < 2e-6 at every tested shape), and
`onnxruntime.quantization.quantize_dynamic` is the quantizer optimum itself calls. On a 2-core
EPYC (AVX512-VNNI, benchmarks/bench.py) ONNX Runtime ran GPT-2 small 1.2x faster than torch in
int8 (whose dynamic quantization rests on functions torch has deprecated) and, in fp32, 1.3x the
batch rate at 0.6x the lone-post latency.

The exported files live in the cache (``WEIBO_SENTI_CACHE``, else ~/.cache/weibo-senti/onnx),
keyed by a hash of the weights and config, so a run is exported once per machine (GPT-2 small:
about 25 s) and a changed model never meets a stale file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)
FORMAT = "weibo-senti-onnx-v3"  # part of the cache key: bump when the export changes


def missing() -> str | None:
    """None when the ONNX Runtime engine can be used here, else what to install."""
    import importlib.util

    need = [m for m in ("onnxruntime", "onnxscript", "onnx") if importlib.util.find_spec(m) is None]
    return f"pip install 'weibo-senti[onnx]' (missing: {', '.join(need)})" if need else None


def model_key(model: nn.Module) -> str:
    """Hash of everything the export depends on: weights, config, library versions."""
    import onnxruntime

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{FORMAT} torch {torch.__version__} ort {onnxruntime.__version__}".encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Logits(nn.Module):
    """The classifier as the graph's one output; no cache tensors (use_cache=False)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits


def export_fp32(model: nn.Module, path: Path) -> None:
    """The classifier as an ONNX graph with dynamic batch and length."""
    ids = torch.ones(2, 16, dtype=torch.long)
    batch, length = torch.export.Dim("batch", max=4096), torch.export.Dim("length", max=4096)
    program = torch.onnx.export(
        _Logits(model).eval(),
        (ids, torch.ones_like(ids)),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes={
            "input_ids": {0: batch, 1: length},
            "attention_mask": {0: batch, 1: length},
        },
        dynamo=True,  # the TorchScript exporter's graph was wrong off the traced shape (|Δ| 0.5)
        optimize=True,
        verbose=False,
    )
    program.save(str(path))


FILES = {"fp32": "model-fp32.onnx", "int8": "model-int8.onnx"}


def export(model: nn.Module, target: Path) -> None:
    """fp32 export, then a copy with dynamic int8 weights, one scale per output channel.

    Only the weight MatMuls are quantized. ORT's default also quantizes Gather, i.e. the token
    and position embeddings, with one scale per table: no faster (a lookup), but on a trained
    gpt2-mini-zh run it took max |dP| on 2,000 dev posts from 0.031 to 0.044, and on a tiny
    saturated test model it flipped a post from P(neg) 0.99999 to 0.45 next to some batch-mates.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8 = target / FILES["fp32"], target / FILES["int8"]
    export_fp32(model, fp32)
    quantize_dynamic(
        fp32, int8, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
    )


def cached_export(model: nn.Module, cache: Path) -> Path:
    """The folder holding this model's ONNX files, exported on first use (atomically, locked)."""
    from filelock import FileLock

    key = model_key(model)
    folder = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{key}.lock")):
        if not all((folder / name).is_file() for name in FILES.values()):
            shutil.rmtree(folder, ignore_errors=True)  # a folder someone emptied: export again
            log.info("exporting the model to ONNX once (cached in %s)", folder)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
            try:
                export(model.cpu().eval(), tmp)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


class OrtClassifier:
    """Called like the torch model on a padded batch; answers the logits as a tensor."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # torch's count: the user's setting holds here too
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {
            "input_ids": input_ids.cpu().numpy(),
            "attention_mask": attention_mask.cpu().numpy(),
        }
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


def classifier(model: nn.Module, precision: str, cache: Path | None = None) -> OrtClassifier:
    """ONNX Runtime running this model in "fp32" or "int8"."""
    from .hub import cache_dir

    cache = cache or cache_dir() / "onnx"
    try:
        folder = cached_export(model, cache)
    except OSError as e:  # a read-only home, a full disk
        from .errors import UserError

        raise UserError(
            f"cannot write the ONNX export under {cache} ({e.strerror or e}): point "
            "WEIBO_SENTI_CACHE at a writable folder, or set WEIBO_SENTI_ENGINE=torch"
        ) from None
    return OrtClassifier(folder / FILES[precision], torch.get_num_threads())
