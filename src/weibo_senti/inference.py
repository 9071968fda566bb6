"""Making a loaded classifier fast on a CPU: LoRA merged, optional bf16 autocast or int8 weights."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def cpu_info() -> str:
    try:
        return open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    return {f for line in cpu_info().splitlines() if line.startswith("flags") for f in line.split()}


def cpu_model_name() -> str:
    for line in cpu_info().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return ""


def cpu_features() -> set[str]:
    """Which of avx2, avx512_bf16, amx_tile and vnni (AVX512-VNNI or AVX-VNNI) the CPU has, as
    torch's own dispatch sees it (cpuinfo: a masked or emulated CPU too), else as
    /proc/cpuinfo lists it."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    has = capabilities() if capabilities is not None else dict.fromkeys(cpu_flags(), True)
    seen = {name for name in ("avx2", "avx512_bf16", "amx_tile") if has.get(name)}
    return seen | ({"vnni"} if has.get("avx512_vnni") or has.get("avx_vnni") else set())


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls beat fp32 only with AVX512-BF16 or AMX; elsewhere autocast just adds casts
    (on an AVX2-only CPU a lone post ran 56x slower under it)."""
    return bool(cpu_features() & {"avx512_bf16", "amx_tile"})


def int8_rows_for_cpu() -> int:
    """Under the CPU-flag rules (autotune.rules_choice: only when timing failed), forward passes
    of up to this many rows run on dynamic int8 weights.

    int8 needs VNNI (or AMX-INT8) to be fast. With AMX, bf16 wins from about a dozen rows on
    (Xeon, GPT-2 small: int8 3.0x faster than bf16 for one post, 0.92x at 16); without AMX,
    int8 wins at every size (EPYC with AVX512-BF16/VNNI: 2.9x at 1 row, 2.0x at 8, 1.5x at 32).
    """
    features = cpu_features()
    if not features & {"vnni", "amx_tile"}:
        return 0
    return 4 if "amx_tile" in features else 1 << 30


def resolve(precision: str, device: torch.device) -> str:
    """ "auto": bf16 autocast where the hardware does bf16 fast (it agrees with fp32 on >99.5% of
    labels, see the benchmark), else fp32."""
    if precision not in PRECISIONS:
        from .errors import UserError

        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """GPT-2's Conv1D is a transposed Linear; dynamic quantization only knows nn.Linear."""
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = nn.Linear(n_in, n_out, device=child.weight.device)
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data
                setattr(parent, name, linear)
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every Linear (weights int8, activations quantized per call).

    No int16 saturation on any CPU kind: torch's dynamic Linear quantizes activations to 7 bits
    (reduce_range), so the pairs fbgemm's AVX2 kernel adds in int16 without VNNI stay below
    32767 (2 * 127 * 128). ONNX Runtime's kernel needs onnx_runtime.int8_weight_bits instead.
    """
    model = conv1d_to_linear(model)
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


ENGINES = ("auto", "onnxruntime", "torch")


def cpu_engine(requested: str = "auto") -> str:
    """What runs a single model's fp32 and int8 passes on a CPU. "auto": ONNX Runtime where
    `weibo-senti[onnx]` is installed (faster, see onnx_runtime.py), else torch."""
    from . import onnx_runtime
    from .errors import UserError

    if requested not in ENGINES:
        raise UserError(
            f"the CPU engine (WEIBO_SENTI_ENGINE) must be one of {', '.join(ENGINES)}, "
            f"not {requested!r}"
        )
    if requested == "torch":
        return "torch"
    reason = onnx_runtime.missing()
    if reason and requested == "onnxruntime":
        raise UserError(f"the onnxruntime engine needs {reason}")
    return "torch" if reason else "onnxruntime"


class TorchInt8:
    """torch's dynamic-int8 copy, called like onnx_runtime.OrtClassifier."""

    def __init__(self, model: nn.Module):
        self.model = quantize_int8(model.cpu()).eval()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def engine_copy(model: nn.Module, precision: str, engine: str):
    """A plain (merged) model for fp32 or int8 passes: (input_ids, attention_mask) -> logits.
    torch's int8 changes ``model`` in place (Conv1D to Linear); ONNX Runtime leaves it alone."""
    if engine == "onnxruntime":
        from .onnx_runtime import classifier

        return classifier(model, precision)
    assert precision == "int8", "torch runs fp32 passes on the model itself"
    return TorchInt8(model)


def fuse_gelu(model: nn.Module) -> nn.Module:
    """GPT-2's `gelu_new` runs as five element-wise ops in Python (a quarter of a bf16 forward
    pass on CPU, profiled); transformers' `GELUTanh` is the same formula in one fused kernel
    (equal up to float rounding). Only the loaded module changes: saved configs keep gelu_new."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
    return model


def prepare(model: nn.Module) -> nn.Module:
    return fuse_gelu(model).eval()


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
