"""Run a benchmark as on an AVX2-only CPU (AMD Zen 3's ISA: no AVX-512, VNNI, BF16 or AMX)
on a newer one: the process restarts itself with avx2_cpuid.c preloaded, so torch, oneDNN,
fbgemm and ONNX Runtime all take the kernels they would take there. Figures measured this way
are labelled "CPUID masked to AVX2": same instructions as a Zen 3, a newer core running them.

    from cpu_isa import restart_with_isa
    restart_with_isa(args.isa)   # first thing in main(); "native" does nothing
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHIM = Path(__file__).with_name("avx2_cpuid.c")
MARK = "WEIBO_SENTI_BENCH_ISA"


def build_shim() -> Path:
    out = Path(tempfile.gettempdir()) / f"avx2_cpuid-{os.getuid()}.so"
    if not out.is_file() or out.stat().st_mtime < SHIM.stat().st_mtime:
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SHIM)], check=True)
        os.replace(tmp, out)
    return out


def restart_with_isa(isa: str) -> None:
    """Re-execute this process with the CPUID mask for ``isa`` ("native": as the CPU is)."""
    if isa == "native" or os.environ.get(MARK) == isa:
        return
    if isa != "avx2":
        raise SystemExit(f"--isa must be native or avx2, not {isa!r}")
    if "cpuid_fault" not in Path("/proc/cpuinfo").read_text():
        raise SystemExit("--isa avx2 needs CPUID faulting (flag cpuid_fault): not on this CPU")
    env = dict(os.environ, LD_PRELOAD=str(build_shim()), **{MARK: isa})
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def describe() -> dict:
    """The CPU as the benchmark ran it: model, the ISA torch dispatches to, whether masked."""
    import torch

    from weibo_senti.inference import cpu_model_name

    masked = os.environ.get(MARK)
    return {
        "cpu_model": cpu_model_name(),
        "isa_seen": torch.backends.cpu.get_cpu_capability(),
        "cpuid_masked_to": masked,
        "label": cpu_model_name() + (f" (CPUID masked to {masked.upper()})" if masked else ""),
    }
