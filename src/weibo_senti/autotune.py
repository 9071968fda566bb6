"""How "auto" runs a loaded classifier on this machine, chosen by measurement: each candidate
path is timed on the loaded model at a lone post and at a full token-budget pass, and the
fastest that agrees with fp32 is kept. Owner of engines.json, the timings cached per CPU (as
the libraries see it), thread count, library versions and model shape.

Paths: torch-fp32, torch-bf16 (autocast), torch-int8 (dynamic quantization), ort-fp32 and
ort-int8 (onnx_runtime.py, with the [onnx] extra). Why timed rather than read off CPU flags:
which wins depends on kernels the flags do not name (on an AVX2-only CPU bf16 autocast ran a
lone post 56x slower than fp32; ONNX Runtime's int8 runs without VNNI). The flag rules
(inference.resolve, inference.int8_rows_for_cpu) remain only for when timing fails, and the
choice then says so.

Agreement: on a fixed probe batch of random posts, a path is refused, whatever its speed,
where it flips the label of more than one post fp32 is sure of (top two probabilities more
than 2 x TOLERANCE apart), or moves the median post's probabilities by more than TOLERANCE, or
the 90th percentile's by more than 2 x TOLERANCE (a broken graph or a saturating kernel does
all three). One confident flip is allowed: on random tokens a tiny model's logits saturate,
and a healthy int8 path turned one such post's P 1.0 into 0.02. Timings are cached; agreement
is checked on every load (it depends on the weights).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PATHS = ("torch-fp32", "torch-bf16", "torch-int8", "ort-fp32", "ort-int8")
LONE_TOKENS = 48  # a lone post of about 40 characters, padded to a multiple of 8 (pad_batch)
BATCH_WIDTH = 64  # a full token-budget pass: budget / 64 rows of 64 tokens
SCREEN_TOKENS = 8  # the first, tiny pass of every path: it finds hopeless ones cheaply
TOO_SLOW = 5.0  # a path this many times fp32's time on the screen is not timed further
TOLERANCE = 0.05  # most the median probe post's probabilities may move against fp32
PROBE_ROWS = 16
Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, mask) -> logits


@dataclass
class Choice:
    """The paths a classifier's passes take: ``lone`` for passes of up to ``switch_tokens``
    padded tokens, ``batch`` for bigger ones. ``source`` says how it was decided."""

    lone: str
    batch: str
    source: str
    switch_tokens: int = 0
    model: str = "fp32"  # what the model itself runs passes no copy can take (several adapters)
    timings: dict[str, dict] = field(default_factory=dict)  # path -> lone_ms/batch_ms or skipped
    gaps: dict[str, float] = field(default_factory=dict)  # path -> max |ΔP| against fp32
    refused: dict[str, str] = field(default_factory=dict)  # path -> why it may not run

    def path_for(self, tokens: int) -> str:
        return self.lone if tokens <= self.switch_tokens else self.batch

    def headline(self) -> str:
        """The paths and how they were decided, e.g. "engine ort-int8 (measured now)"."""
        if self.lone == self.batch:
            return f"engine {self.batch} ({self.how})"
        return (
            f"engine {self.lone} for passes up to {self.switch_tokens} tokens, "
            f"{self.batch} above ({self.how})"
        )

    @property
    def how(self) -> str:
        """The source without its details: "measured now", "CPU-flag rules", ..."""
        return self.source.split(",")[0].split(":")[0]

    def summary(self) -> str:
        """One line: the paths, and the figures they were chosen by."""
        parts = [self.headline().removesuffix(f" ({self.how})") + f" ({self.source})"]
        timed = [
            f"{path} {t['lone_ms']:.1f}/{t['batch_ms']:.0f} ms"
            for path, t in self.timings.items()
            if "batch_ms" in t
        ]
        if timed:
            parts.append("lone post/full pass: " + "; ".join(timed))
        parts += [
            f"{p} not timed: {t['skipped']}" for p, t in self.timings.items() if "skipped" in t
        ]
        parts += [f"{path} refused: {why}" for path, why in self.refused.items()]
        return "; ".join(parts)


def fixed(precision: str, engine: str, source: str) -> Choice:
    """What an explicit --precision runs: fp32 and int8 on the CPU engine, bf16 on torch."""
    prefix = "ort" if engine == "onnxruntime" and precision != "bf16" else "torch"
    path = f"{prefix}-{precision}"
    return Choice(path, path, source, model=precision)


def rules_choice(device: torch.device, engine: str, why: str) -> Choice:
    """The CPU-flag rules, for when timing failed: bf16 where the CPU has AVX512-BF16 or AMX,
    int8 for the passes a VNNI CPU is faster at (inference.int8_rows_for_cpu)."""
    from . import inference

    model = inference.resolve("auto", device)
    prefix = "ort" if engine == "onnxruntime" else "torch"
    big = f"{prefix}-fp32" if model == "fp32" else "torch-bf16"
    rows = inference.int8_rows_for_cpu() if device.type == "cpu" else 0
    lone = batch = big if rows == 0 else f"{prefix}-int8"
    if 0 < rows < 1 << 20:  # int8 for small passes only
        batch = big
    return Choice(lone, batch, f"CPU-flag rules: {why}", rows * BATCH_WIDTH, model=model)


def split(path: str) -> tuple[str, str]:
    """ "ort-int8" -> ("onnxruntime", "int8")."""
    engine, precision = path.split("-")
    return ("onnxruntime" if engine == "ort" else "torch"), precision


# ---------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(run: Runner, batch: dict, device: torch.device, min_s: float, reps: int) -> float:
    """Fastest of at least ``reps`` timed calls (more while under ``min_s``), after a warm-up:
    the minimum, as other load on the machine only ever adds time."""
    with torch.inference_mode():
        run(batch["input_ids"], batch["attention_mask"])
        times, start = [], time.perf_counter()
        while len(times) < reps or (time.perf_counter() - start < min_s and len(times) < 20):
            synchronize(device)
            t = time.perf_counter()
            run(batch["input_ids"], batch["attention_mask"])
            synchronize(device)
            times.append(time.perf_counter() - t)
    return 1000 * min(times)


def random_ids(shape: tuple, vocab_size: int, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Any id of the vocabulary but [PAD], wherever [PAD] sits."""
    ids = torch.randint(0, vocab_size - 1, shape, generator=gen)
    return ids + (ids >= pad).long()


def shaped_batch(rows: int, width: int, vocab_size: int, pad: int, device) -> dict:
    gen = torch.Generator().manual_seed(width * 1000 + rows)
    ids = random_ids((rows, width), vocab_size, pad, gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def measure(runners: dict[str, Runner], shape: dict, device: torch.device) -> dict[str, dict]:
    """Each path's lone-post and full-pass milliseconds; paths more than TOO_SLOW times fp32's
    time on a tiny first pass, or failing, are skipped with the reason."""
    vocab, pad, budget = shape["vocab"], shape["pad"], shape["budget"]
    screen = shaped_batch(1, SCREEN_TOKENS, vocab, pad, device)
    lone = shaped_batch(1, LONE_TOKENS, vocab, pad, device)
    full = shaped_batch(max(1, budget // BATCH_WIDTH), BATCH_WIDTH, vocab, pad, device)
    timings: dict[str, dict] = {}
    for path, run in runners.items():
        try:
            timings[path] = {"screen_ms": time_pass(run, screen, device, 0.0, 1)}
        except Exception as e:  # noqa: BLE001 - a path that cannot run is not a candidate
            timings[path] = {"failed": failure(e)}
    # against fp32, the reference (always timed): a path slow on 8 tokens but fast on 512
    # (bf16 with AVX512-BF16: 5x int8's time on 8 tokens, 1.85x fp32's speed on 512) stays
    screened = [t["screen_ms"] for t in timings.values() if "screen_ms" in t]
    base = timings.get("torch-fp32", {}).get("screen_ms") or min(screened, default=0.0)
    for path, run in runners.items():
        t = timings[path]
        if "screen_ms" not in t:
            continue
        if t["screen_ms"] > TOO_SLOW * base and path != "torch-fp32":
            t["skipped"] = (
                f"{t['screen_ms'] / base:.0f}x fp32's time on a pass of {SCREEN_TOKENS} tokens"
            )
            continue
        try:
            t["lone_ms"] = time_pass(run, lone, device, 0.2, 3)
            t["batch_ms"] = time_pass(run, full, device, 0.0, 2)
        except Exception as e:  # noqa: BLE001 - as above
            timings[path] = {"failed": failure(e)}
    return timings


def failure(error: Exception) -> str:
    return f"failed: {type(error).__name__}: {error}".splitlines()[0][:160]


# ---------------------------------------------------------------- agreement
def probe_batch(vocab_size: int, pad: int, device) -> dict:
    """PROBE_ROWS right-padded rows of 4 to 60 random tokens (any id but [PAD]), seeded."""
    from .features import pad_batch

    gen = torch.Generator().manual_seed(0)
    lengths = torch.linspace(4, 60, PROBE_ROWS).long().tolist()
    rows = [random_ids((n,), vocab_size, pad, gen).tolist() for n in lengths]
    return {k: v.to(device) for k, v in pad_batch(rows, pad, multiple=8).items()}


def probabilities(run: Runner, batch: dict) -> torch.Tensor:
    with torch.inference_mode():
        return run(batch["input_ids"], batch["attention_mask"]).float().softmax(-1).cpu()


def disagreement(run: Runner, batch: dict, want: torch.Tensor) -> tuple[float, str | None]:
    """Largest |ΔP| between this path and fp32 on the probe batch, and why it may not run
    (None: it agrees)."""
    got = probabilities(run, batch)
    moved = (got - want).abs().amax(-1)
    top2 = want.topk(min(2, want.shape[-1]), dim=-1).values
    sure = (top2[:, 0] - top2[:, -1]) > 2 * TOLERANCE
    flips = int(((got.argmax(-1) != want.argmax(-1)) & sure).sum())
    median, high = float(moved.quantile(0.5)), float(moved.quantile(0.9))
    if flips > 1 or median > TOLERANCE or high > 2 * TOLERANCE:
        return float(moved.max()), (
            f"{flips} of {len(want)} probe labels fp32 is sure of differ, |ΔP| median "
            f"{median:.3f}, 90th percentile {high:.3f}"
        )
    return float(moved.max()), None


# ---------------------------------------------------------------- the cache
def cache_file() -> Path:
    from .hub import cache_dir

    return cache_dir() / "engines.json"


def machine(device: torch.device) -> dict:
    """What the timings depend on besides the model: the CPU as the libraries see it (an
    emulated or masked ISA counts as another CPU), threads, versions."""
    import platform

    import transformers

    from . import __version__, inference

    if device.type == "cuda":
        cpu = torch.cuda.get_device_name(device)
    else:
        cpu = inference.cpu_model_name() or platform.processor() or platform.machine()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device.type == "cuda":  # CPU threads and ISA do not time a GPU
        return {"device": cpu, "weibo_senti": __version__, **versions}
    return {
        "device": cpu,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "weibo_senti": __version__,
        **versions,
    }


def cache_key(device: torch.device, shape: dict) -> str:
    keyed = {k: v for k, v in shape.items() if k != "pad"}  # the pad id: the probe's only
    return json.dumps({**machine(device), **keyed}, sort_keys=True)


def read_entries(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: timing again rewrites it
    return entries if isinstance(entries, dict) else {}


def cached_timings(key: str, candidates: list[str], time_them) -> tuple[dict, str]:
    """The timings under ``key`` from the cache, else ``time_them()``'s, added to it. Timing
    runs under the cache's lock: processes starting together on shared cores would slow each
    other and cache slowed figures; the later ones read the first one's instead."""
    from filelock import FileLock

    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock", timeout=600)
        lock.acquire()
    except OSError as e:  # a read-only home, or a lock held for ten minutes
        log.warning("could not lock the engine timings' cache %s (%s)", path, e)
        return time_them(), "measured now, not cached"
    try:
        entry = read_entries(path).get(key)
        timings = entry.get("timings") if isinstance(entry, dict) else None
        if isinstance(timings, dict) and set(candidates) <= set(timings):
            return timings, f"measured before, cached in {path}"
        timings = time_them()
        write_entry(path, key, {p: t for p, t in timings.items() if "failed" not in t})
        return timings, "measured now"
    finally:
        lock.release()


def write_entry(path: Path, key: str, timings: dict) -> None:
    """Add one entry, atomically (the caller holds the lock). Failed paths are left out: the
    next load times them again."""
    from .files import write_json

    entries = read_entries(path)
    entries[key] = {"timings": timings, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        write_json(path, entries)
    except OSError as e:  # a full disk: this process keeps its timings, the next times again
        log.warning("could not cache the engine timings in %s (%s)", path, e.strerror or e)


# ---------------------------------------------------------------- choosing
def ranked(timings: dict[str, dict], key: str) -> list[str]:
    timed = [p for p, t in timings.items() if key in t]
    return sorted(timed, key=lambda p: timings[p][key])


def switch_point(lone: dict, batch: dict, budget: int) -> int:
    """Padded tokens up to which the lone-post winner stays faster than the full-pass winner,
    each path's time taken as linear in tokens between the two measured sizes."""
    full = (budget // BATCH_WIDTH) * BATCH_WIDTH
    slope_l = (lone["batch_ms"] - lone["lone_ms"]) / (full - LONE_TOKENS)
    slope_b = (batch["batch_ms"] - batch["lone_ms"]) / (full - LONE_TOKENS)
    if slope_l <= slope_b:
        return full
    crossing = LONE_TOKENS + (batch["lone_ms"] - lone["lone_ms"]) / (slope_l - slope_b)
    return int(min(max(crossing, LONE_TOKENS), full))


def first_agreeing(order: list[str], check: Callable[[str], str | None], refused: dict) -> str:
    for path in order:
        if path in refused:
            continue
        why = check(path)
        if why is None:
            return path
        refused[path] = why
    return "torch-fp32"  # the reference itself: agrees by definition


@dataclass
class Request:
    """What choose() needs from a classifier: a runner per candidate path (built on demand),
    the model's shape, the device, and how to drop a path's copy it will not use."""

    runner: Callable[[str], Runner]
    candidates: list[str]
    shape: dict
    device: torch.device
    drop: Callable[[str], None] = lambda path: None
    refused: dict[str, str] = field(default_factory=dict)  # paths unusable before timing


def choose(req: Request) -> Choice:
    """Time (or read the cached timings of) each candidate; keep the fastest that agrees."""

    def time_them() -> dict:
        runners = {p: req.runner(p) for p in req.candidates}
        log.info("timing the inference paths on this machine once: %s", ", ".join(runners))
        return measure(runners, req.shape, req.device)

    timings, source = cached_timings(cache_key(req.device, req.shape), req.candidates, time_them)
    timings = {p: timings[p] for p in req.candidates}
    refused = dict(req.refused)
    refused.update({p: t["failed"] for p, t in timings.items() if "failed" in t})
    choice = agreeing_choice(req, timings, source, refused)
    for path in req.candidates:
        if path not in (choice.lone, choice.batch):
            req.drop(path)
    for path, why in refused.items():
        log.warning("the %s path is not used here: %s", path, why)
    return choice


def agreeing_choice(req: Request, timings: dict, source: str, refused: dict) -> Choice:
    """The fastest timed paths that agree with fp32 on the probe batch (each probed once)."""
    probe = probe_batch(req.shape["vocab"], req.shape["pad"], req.device)
    want = probabilities(req.runner("torch-fp32"), probe)
    gaps: dict[str, float] = {}
    verdicts: dict[str, str | None] = {}

    def check(path: str) -> str | None:
        if path not in verdicts:
            try:
                gaps[path], verdicts[path] = disagreement(req.runner(path), probe, want)
            except Exception as e:  # noqa: BLE001 - a path that fails here is not used
                verdicts[path] = failure(e)
        return verdicts[path]

    lone = first_agreeing(ranked(timings, "lone_ms"), check, refused)
    batch = first_agreeing(ranked(timings, "batch_ms"), check, refused)
    torch_paths = [p for p in ranked(timings, "batch_ms") if p in ("torch-fp32", "torch-bf16")]
    model = split(first_agreeing(torch_paths, check, refused))[1]
    switch = 0
    if lone != batch and lone in timings and batch in timings:
        switch = switch_point(timings[lone], timings[batch], req.shape["budget"])
    return Choice(lone, batch, source, switch, model, timings, gaps, refused)
