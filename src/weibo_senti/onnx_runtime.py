"""CPU inference on ONNX Runtime: the model exported once with torch.onnx, a copy with int8
weights from ONNX Runtime's own dynamic quantizer, both run by its CPU kernels. Owner of the
.onnx files.

Why not optimum: optimum-onnx 0.1 pins transformers < 5. torch's exporter (dynamo, with
onnxscript) exports transformers 5's GPT-2 exactly (|Δlogit| < 2e-6 at every tested shape), and
`onnxruntime.quantization.quantize_dynamic` is the quantizer optimum itself calls. The graph is
not the model's own forward but _PooledLogits: the same logits for our right-padded batches,
with attention as ONNX's fused Attention op and the last block run for the pooled token only
(int8 1.27x, fp32 1.08x the plain export's rate on a 2-core EPYC). benchmarks/bench.py
measures it against torch and against optimum + ONNX Runtime.

int8 weights are 8-bit where ONNX Runtime's uint8 x int8 matmul is exact, 7-bit where it
saturates (CPUs without VNNI: int8_weight_bits), and int8 is refused where neither is exact.

The exported files live in the cache (``WEIBO_SENTI_CACHE``, else ~/.cache/weibo-senti/onnx),
keyed by a hash of the weights and config, so a run is exported once per machine (GPT-2 small:
about 25 s) and a changed model never meets a stale file.
"""

from __future__ import annotations

import functools
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
FORMAT = "weibo-senti-onnx-v5"  # part of the cache key: bump when the export changes


def missing() -> str | None:
    """None when the ONNX Runtime engine can be used here, else what to install."""
    import importlib.util

    need = [m for m in ("onnxruntime", "onnxscript", "onnx") if importlib.util.find_spec(m) is None]
    return f"pip install 'weibo-senti[onnx]' (missing: {', '.join(need)})" if need else None


def model_key(model: nn.Module) -> str:
    """Hash of everything the export depends on: weights, config, library versions."""
    import onnxruntime

    h = hashlib.blake2b(digest_size=16)
    versions = f"torch {torch.__version__} ort {onnxruntime.__version__}"
    h.update(f"{FORMAT} {versions} int8 weights {int8_weight_bits()}-bit".encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Logits(nn.Module):
    """The classifier as the graph's one output; no cache tensors (use_cache=False). The graph
    for models _PooledLogits does not fit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits


def _attend(attn: nn.Module, x, key=None, value=None, mask=None):
    """GPT-2 self-attention as one ONNX Attention op (opset 23) on (batch, length, hidden)
    tensors: no head reshapes or transposes in the graph, and, causal without ``mask``, no mask
    arithmetic either. ``key``/``value``: attend over these instead of x's own."""
    query, own_key, own_value = attn.c_attn(x).split(attn.split_size, dim=2)
    out = torch.onnx.ops.attention(
        query,
        own_key if key is None else key,
        own_value if value is None else value,
        mask,
        is_causal=mask is None,
        q_num_heads=attn.num_heads,
        kv_num_heads=attn.num_heads,
        scale=attn.scaling,
    )[0]
    return attn.c_proj(out)


class _PooledLogits(nn.Module):
    """GPT-2's classifier as ONNX Runtime runs it fastest; for right-padded batches (ours,
    features.pad_batch) equal to transformers' logits, so the graph takes input_ids alone.

    - Causal attention without the padding mask: a real token only sees positions before it,
      all real when the [PAD]s come last; what the [PAD] positions compute is never read.
      transformers' SDPA graph spent 30% of an int8 pass on head transposes, mask Where/IsNaN
      and the decomposed softmax (ORT profile, GPT-2 small).
    - The last block for the pooled token only (the last non-[PAD], found as transformers
      finds it): keys and values for every position, then query, attention and MLP for one
      row per post, i.e. 9/12 of the last block's matmuls skipped (6% of GPT-2 small's).
    Adapters run as their block hooks would (adapters.after_block).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        from .adapters import after_block

        gpt2, pad = self.model.transformer, self.model.config.pad_token_id
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = gpt2.wte(input_ids) + gpt2.wpe(positions)
        *blocks, last = gpt2.h
        for block in blocks:
            hidden = hidden + _attend(block.attn, block.ln_1(hidden))
            hidden = after_block(block, hidden + block.mlp(block.ln_2(hidden)))
        pooled = (positions * (input_ids != pad)).argmax(-1)
        _, key, value = last.attn.c_attn(last.ln_1(hidden)).split(last.attn.split_size, dim=2)
        row = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), pooled][:, None]
        sees = (positions <= pooled[:, None])[:, None, None, :]  # (batch, 1, 1, length)
        row = row + _attend(last.attn, last.ln_1(row), key, value, sees)
        row = after_block(last, row + last.mlp(last.ln_2(row)))
        return self.model.score(gpt2.ln_f(row))[:, 0]


def fits_pooled_graph(model: nn.Module) -> bool:
    """A GPT-2 classifier _PooledLogits computes (export_fp32 then checks it on a probe)."""
    gpt2, config = getattr(model, "transformer", None), model.config
    blocks = getattr(gpt2, "h", None)
    return (
        isinstance(blocks, nn.ModuleList)
        and len(blocks) > 0
        and all(hasattr(b.attn, "c_attn") and hasattr(b.attn, "scaling") for b in blocks)
        and hasattr(model, "score")
        and config.pad_token_id is not None
        and not getattr(config, "add_cross_attention", False)
    )


def _export(module: nn.Module, path: Path, inputs: list[str], opset: int | None) -> None:
    ids = torch.ones(2, 16, dtype=torch.long)
    batch, length = torch.export.Dim("batch", max=4096), torch.export.Dim("length", max=4096)
    program = torch.onnx.export(
        module.eval(),
        (ids, torch.ones_like(ids))[: len(inputs)],
        input_names=inputs,
        output_names=["logits"],
        dynamic_shapes={name: {0: batch, 1: length} for name in inputs},
        dynamo=True,  # the TorchScript exporter's graph was wrong off the traced shape (|Δ| 0.5)
        optimize=True,
        verbose=False,
        opset_version=opset,
    )
    program.save(str(path))


def _probe(model: nn.Module, path: Path) -> float:
    """Largest |Δlogit| between the graph and the model on a right-padded probe batch."""
    import onnxruntime as ort

    from .features import pad_batch

    pad = model.config.pad_token_id
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, model.config.vocab_size - 1, (n,), generator=gen) for n in (11, 6, 1)]
    rows = [(r + (r >= pad).long()).tolist() for r in rows]  # any id but [PAD]
    rows[0][3] = pad  # a [PAD] id inside a text: attended to, as pad_batch's mask says
    batch = pad_batch(rows, pad)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    got = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
    return float(abs(got - want).max())


def export_fp32(model: nn.Module, path: Path) -> None:
    """The classifier as an ONNX graph with dynamic batch and length: _PooledLogits where it
    fits and equals the model on a probe batch, else the model's own forward."""
    if fits_pooled_graph(model):
        try:  # opset 23 needs torch >= 2.8 to export it, onnxruntime >= 1.23 to run it
            _export(_PooledLogits(model), path, ["input_ids"], opset=23)
            gap = _probe(model, path)
        except Exception as e:  # noqa: BLE001 - any failure here has the exact plain graph to fall back on
            gap, why = float("nan"), f"{type(e).__name__}: {e}".splitlines()[0][:200]
        else:
            why = f"off by {gap:.3g} on a probe batch"
        if gap < 1e-3:
            return
        log.info("the pooled ONNX graph failed (%s): exporting the plain one", why)
    _export(_Logits(model), path, ["input_ids", "attention_mask"], opset=None)


FILES = {"fp32": "model-fp32.onnx", "int8": "model-int8.onnx"}


def _u8s8_exact(weight: int) -> bool:
    """Whether ONNX Runtime's uint8 x int8 matmul (the kernel of every int8 pass) computes
    255 * ``weight`` products exactly on this CPU, at one row (its GEMV kernel) and at four.

    Without VNNI (AVX2, AVX-512 without VNNI) MLAS adds each pair of products in int16 with
    VPMADDUBSW, which saturates at 32767: 2 * 255 * 127 = 64770 clips, 2 * 255 * 64 = 32640
    does not. ONNX Runtime picks that kernel by CPUID, so the kernel itself is asked.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((32, 8), weight, np.int8)
    w[:, 1::2] = -weight  # both signs: the positive and the negative int16 limit
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "u8s8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 32])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for rows in (1, 4):
        a = np.full((rows, 32), 255, np.uint8)
        if not (session.run(None, {"a": a})[0] == a.astype(np.int32) @ w.astype(np.int32)).all():
            return False
    return True


@functools.cache  # one answer per process: the CPU does not change under it
def int8_weight_bits() -> int:
    """8 where int8 weights may use their full range here, 7 (ONNX Runtime's reduce_range,
    weights in [-64, 64]) where the full range saturates, 0 where neither is exact.

    Saturation is silent and large: on an AVX2-only EPYC, full-range weights turned a test
    model's P(negative) 0.99999 into 0.32. 7 bits cost precision, so VNNI CPUs keep 8.
    """
    return 8 if _u8s8_exact(127) else 7 if _u8s8_exact(64) else 0


def quantize(fp32: Path, int8: Path) -> None:
    """Dynamic int8 weights, one scale per output channel, in int8_weight_bits() bits.

    Only the weight MatMuls are quantized. ORT's default also quantizes Gather, i.e. the token
    and position embeddings, with one scale per table: no faster (a lookup), but on a trained
    gpt2-mini-zh run it took max |dP| on 2,000 dev posts from 0.031 to 0.044, and on a tiny
    saturated test model it flipped a post from P(neg) 0.99999 to 0.45 next to some batch-mates.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32,
        int8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=int8_weight_bits() < 8,
        op_types_to_quantize=["MatMul"],
    )


def export(model: nn.Module, target: Path) -> None:
    """fp32 export, then a copy with dynamic int8 weights (quantize)."""
    fp32, int8 = target / FILES["fp32"], target / FILES["int8"]
    export_fp32(model, fp32)
    quantize(fp32, int8)


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
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if "attention_mask" not in self.inputs and bool(
            (attention_mask[:, 1:] > attention_mask[:, :-1]).any()
        ):
            raise ValueError("the pooled ONNX graph needs right-padded batches (pad_batch)")
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        feed = {name: feed[name].cpu().numpy() for name in self.inputs}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


def classifier(model: nn.Module, precision: str, cache: Path | None = None) -> OrtClassifier:
    """ONNX Runtime running this model in "fp32" or "int8"."""
    from .errors import UserError
    from .hub import cache_dir

    if precision == "int8" and not int8_weight_bits():
        raise UserError(
            "int8 on ONNX Runtime is not exact on this CPU (its uint8 x int8 matmul saturates "
            "even with 7-bit weights): use --precision fp32, or WEIBO_SENTI_ENGINE=torch for "
            "torch's int8"
        )
    cache = cache or cache_dir() / "onnx"
    try:
        folder = cached_export(model, cache)
    except OSError as e:  # a read-only home, a full disk
        raise UserError(
            f"cannot write the ONNX export under {cache} ({e.strerror or e}): point "
            "WEIBO_SENTI_CACHE at a writable folder, or set WEIBO_SENTI_ENGINE=torch"
        ) from None
    return OrtClassifier(folder / FILES[precision], torch.get_num_threads())
