"""The run folder: the one module that names, writes and reads the files a run is made of.

Everything else asks this module for a run's record (``RunInfo``), tokenizer, weights, metrics
or checkpoint; no other module spells a file name of the folder. The saved tokenizer carries the
tokenization rules (no ``token_type_ids``, ``model_max_length`` = the run's max length, ``[PAD]``)
so that weibo-senti and stock transformers/PEFT clients tokenize a post identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from . import __version__
from .config import describe
from .data import LABELS, LABELS_ZH
from .errors import UserError
from .files import (
    append_jsonl,
    atomic_write,
    move_files_into,
    normal_dir_mode,
    replace_dir,
    write_json,
    write_text,
)

log = logging.getLogger("weibo_senti")

INFO = "run.json"
HYPERPARAMETERS = "hyperparameters.yaml"
METRICS = "metrics.jsonl"
EVAL_RESULTS = "eval_results.json"
REPORT = "report.png"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATE = "progress.json"  # ours; the rest of checkpoint/ is Accelerate's save_state
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
BUNDLED_BASE = "base"  # `merge --export`: the base model's own files, inside the run
LOCK = ".lock"  # an OS lock (flock) held while a training writes the folder
WEIGHT_FILES = {
    "lora": (ADAPTER_CONFIG, ADAPTER_WEIGHTS),
    "adapter": (ADAPTER_CONFIG, ADAPTER_WEIGHTS),
    "full": (MODEL_CONFIG, MODEL_WEIGHTS),
}
# GPT-2 would add token_type_ids as token embeddings: the saved tokenizer never returns them.
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


# ---------------------------------------------------------------------------- the record
# run.json is validated by pydantic with strict types: a record of ours always has the right
# ones, so a string for an int, a negative size or a bool for a count is a damaged file.
Count = Annotated[StrictInt, Field(ge=0)]
Name = Annotated[StrictStr, Field(min_length=1)]


@dataclass
class BaseRef:
    """The base model a run was trained on: as given, where it was found, what it is."""

    name: Name  # hub id or path, as the user gave it
    path: StrictStr | None = None  # absolute path of the folder used (None: not recorded)
    fingerprint: dict = field(default_factory=dict)  # architecture and vocabulary size
    bundled: StrictBool = False  # the base's files lie in the run folder itself (BUNDLED_BASE)


@dataclass
class RunInfo:
    """What ``run.json`` holds."""

    method: Literal["lora", "adapter", "full"]
    base: BaseRef
    max_length: Annotated[StrictInt, Field(ge=3)]  # [CLS] text [SEP]
    pad_token_id: Count
    labels: Annotated[list[Name], Field(min_length=2)] = field(default_factory=lambda: list(LABELS))
    labels_zh: list[StrictStr] = field(default_factory=lambda: list(LABELS_ZH))
    text_column: Name = "review"
    complete: StrictBool = False
    precision: StrictStr | None = None
    trainable_params: Count | None = None
    all_params: Count | None = None
    origin: dict = field(default_factory=dict)  # merged_from, combined_from, ... if any
    # fitted on dev after training; already folded into the head
    temperature: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] = 1.0
    files: dict[StrictStr, StrictStr] = field(default_factory=dict)  # SHA-256, when sealed
    weibo_senti_version: StrictStr = __version__

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: Path) -> RunInfo:
        if not isinstance(raw, dict):
            raise UserError(f"{where} is not a weibo-senti run record (not a JSON object)")
        raw = _upgrade_record(dict(raw))
        for key in ("method", "base", "max_length", "pad_token_id"):
            if key not in raw:
                raise UserError(f"{where} lacks '{key}': not a weibo-senti run folder")
        if raw["method"] not in WEIGHT_FILES:
            raise UserError(
                f"{where}: unknown method {raw['method']!r} (weibo-senti writes "
                f"{', '.join(WEIGHT_FILES)})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        origin = {k: v for k, v in raw.items() if k not in known}  # older flat provenance keys
        values = {k: v for k, v in raw.items() if k in known}
        if isinstance(values.get("origin", {}), dict):
            values["origin"] = {**origin, **values.get("origin", {})}
        try:
            info = _RECORD.validate_python(values)
        except ValidationError as e:
            raise UserError(f"{where} is a damaged run record: {describe(e, 'field')}") from None
        if len(info.labels_zh) != len(info.labels):
            raise UserError(f"{where} is a damaged run record: labels_zh does not match labels")
        return info


def _upgrade_record(raw: dict) -> dict:
    """Records of older versions: the base as a bare name; no ``complete`` flag (those
    versions wrote run.json only once the run had finished)."""
    if isinstance(raw.get("base_model"), str):  # written by weibo-senti 0.1 before this
        name = raw.pop("base_model")
        bundled = name == BUNDLED_BASE and "exported_from" in raw  # relative to the run
        raw["base"] = {"name": name, "fingerprint": raw.get("base") or {}, "bundled": bundled}
    raw.setdefault("complete", True)
    return raw


_RECORD = TypeAdapter(RunInfo)


def fingerprint(config) -> dict:
    """What an adapter depends on: architecture and vocabulary of the base."""
    return {
        "model_type": config.model_type,
        "n_layer": getattr(config, "n_layer", None),
        "n_embd": getattr(config, "n_embd", None),
        "vocab_size": config.vocab_size,
    }


def base_weights_sha256(folder: Path) -> str | None:
    """One digest over the base's weight files (safetensors if it has any, else .bin): a base
    of the same shape with other weights would make an adapter's answers garbage."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{sha256(f)}".encode())
    return digest.hexdigest()


def base_ref(name: str, folder: Path, config) -> BaseRef:
    found = {**fingerprint(config), "weights_sha256": base_weights_sha256(folder)}
    return BaseRef(name=name, path=str(Path(folder).resolve()), fingerprint=found)


def same_base(recorded: dict, other: dict) -> bool:
    """Fingerprints agree on every key both have (runs recorded before a key existed lack it)."""
    return all(recorded[k] == other[k] for k in recorded.keys() & other.keys())


def read_info(run: str | Path) -> RunInfo:
    run = Path(run)
    if not run.exists():
        raise UserError(f"run folder {run} does not exist")
    if not run.is_dir():
        raise UserError(f"{run} is a file, not a run folder")
    refuse_custom_code(run)
    info = RunInfo.from_dict(read_json(run / INFO), run / INFO)
    verify_files(run, info)
    return info


# What a prediction depends on: sealed (SHA-256 in run.json) when a run is complete.
SEALED_FILES = (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Keyed on the file's identity, so a command that reads a run's record several times
    hashes each file once."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def seal(folder: Path) -> None:
    """Record the SHA-256 of every file a prediction depends on (once the folder is final)."""
    info = RunInfo.from_dict(read_json(folder / INFO), folder / INFO)
    info.files = {n: sha256(folder / n) for n in SEALED_FILES if (folder / n).is_file()}
    write_info(folder, info)


def verify_files(run: Path, info: RunInfo) -> None:
    """A sealed file that is missing or changed is named in one line (bit flips, a swapped
    tokenizer of the same size, a half-copied folder)."""
    for name, digest in info.files.items():
        path = run / name
        if not path.is_file():
            raise UserError(f"run folder {run} is missing {name} (recorded in {INFO})")
        if sha256(path) != digest:
            raise UserError(
                f"{path} has changed since the run was saved (its SHA-256 differs from the one "
                f"in {INFO}): restore it, or train again"
            )


CODE_POINTERS = ("config.json", "tokenizer_config.json", "adapter_config.json")


def refuse_custom_code(folder: Path) -> None:
    """A folder whose configs name Python code to import (``auto_map``) is refused: weibo-senti
    never runs code from a folder, and a run or base of ours never needs any."""
    for name in CODE_POINTERS:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # reported as corrupt by whoever reads it
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if auto_map:
            target = next(iter(auto_map.values()), "")
            target = target[0] if isinstance(target, list) else target
            raise UserError(
                f"{path} asks to run code from the folder (auto_map -> {target}); weibo-senti "
                "never runs code from a folder: remove auto_map or use another folder"
            )


def write_info(run: Path, info: RunInfo) -> None:
    write_json(run / INFO, info.to_dict())


def mark_complete(run: Path) -> None:
    info = read_info(run)
    info.complete = True
    write_info(run, info)
    seal(run)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"corrupt file {path}: {e}") from None


# ---------------------------------------------------------------------------- the base
def resolve_base(run: Path, info: RunInfo, override: str | None = None) -> Path:
    """The run's base folder: ``override``; else the bundled copy, the absolute path recorded
    at training time, the name as given (from here), then the hub id. It must match the
    recorded fingerprint."""
    from .hub import looks_like_hub_id, resolve_base_model

    if override:
        folder = resolve_base_model(override)
        mismatch = _fingerprint_mismatch(info, folder)
        if mismatch:
            raise UserError(f"{run} was trained on a different base: {override} {mismatch}")
        return folder
    local = [run / BUNDLED_BASE] if info.base.bundled else []
    local += [Path(c).expanduser() for c in (info.base.path, info.base.name) if c]
    tried = []
    for path in dict.fromkeys(p.resolve() for p in local):
        if not (path / "config.json").is_file():
            tried.append(f"{path} (not found)")
        elif mismatch := _fingerprint_mismatch(info, path):
            tried.append(f"{path} {mismatch}")
        else:
            return path
    if looks_like_hub_id(info.base.name) and not info.base.bundled:
        try:
            folder = resolve_base_model(info.base.name)
        except UserError:
            tried.append(f"hub id {info.base.name} (not cached, hub not reachable)")
        else:
            if not (mismatch := _fingerprint_mismatch(info, folder)):
                return folder
            tried.append(f"hub id {info.base.name} {mismatch}")
    raise UserError(
        f"cannot find the base model of {run}: tried {'; '.join(tried)}; "
        "pass --base-model PATH to a local copy of it"
    )


def _fingerprint_mismatch(info: RunInfo, folder: Path) -> str:
    """Why ``folder`` is not the run's base ("" when it is)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as e:  # corrupt or foreign config.json
        return f"(unreadable config.json: {str(e).splitlines()[0][:120]})"
    found = fingerprint(config)
    recorded = info.base.fingerprint
    if recorded and not same_base(recorded, found):
        return f"is another model ({found}; the run needs {recorded})"
    if recorded.get("weights_sha256") and base_weights_sha256(folder) != recorded["weights_sha256"]:
        return "has the right shape but other weights than the run was trained on"
    return ""


# ---------------------------------------------------------------------------- tokenizer
def load_tokenizer(folder: str | Path, max_length: int | None = None):
    """A tokenizer with weibo-senti's rules; ``max_length`` sets them (a base), else the
    folder's saved rules apply (a run). Never runs code from the folder."""
    from transformers import AutoTokenizer

    refuse_custom_code(Path(folder))
    kwargs = {"model_input_names": MODEL_INPUT_NAMES}
    if max_length is not None:
        kwargs["model_max_length"] = max_length
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, **kwargs)
    except Exception as e:
        raise UserError(f"cannot load the tokenizer from {folder}: {e}") from None
    if tok.pad_token_id is None:
        raise UserError(f"tokenizer in {folder} has no [PAD] token")
    tok.padding_side = "right"  # GPT-2 pools the last non-[PAD] token
    return tok


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Save without the truncation/padding state the last call left in the fast backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    tokenizer.save_pretrained(str(folder))


def run_tokenizer(run: Path, info: RunInfo):
    tok = load_tokenizer(run)
    if tok.pad_token_id != info.pad_token_id:
        raise UserError(
            f"{run}: tokenizer [PAD] id {tok.pad_token_id} differs from the recorded "
            f"pad id {info.pad_token_id}"
        )
    if tok.model_max_length != info.max_length:  # a run saved before the rules were saved
        tok.model_max_length = info.max_length
    return tok


# ---------------------------------------------------------------------------- weights
def portable_base_name(given: str) -> str:
    """How adapter_config.json names the base: a local folder by its absolute path (so PEFT's
    AutoPeftModel finds it from any directory), a hub id as it is."""
    path = Path(given).expanduser()
    return str(path.resolve()) if path.exists() else given


def save_weights(model, method: str, folder: Path, base_name: str) -> None:
    """The method's weights (safetensors + a small JSON config) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if method in ("lora", "full"):
        model.save_pretrained(str(folder), safe_serialization=True)
        (folder / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card stub
        if method == "lora":  # a hub id, or the local base's absolute path (AutoPeftModel)
            cfg = read_json(folder / ADAPTER_CONFIG)
            cfg["base_model_name_or_path"] = base_name
            write_json(folder / ADAPTER_CONFIG, cfg)
        return
    from safetensors.torch import save_file

    from . import adapters

    state, config = adapters.export(model, "default", model.score)
    save_file(state, str(folder / ADAPTER_WEIGHTS))
    write_json(folder / ADAPTER_CONFIG, {**config, "base_model_name_or_path": base_name})


def save_lora_state(folder: Path, state: dict, peft_config, base_name: str) -> None:
    """A LoRA adapter built in memory (``combine``), in PEFT's own layout."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / ADAPTER_WEIGHTS))
    peft_config.base_model_name_or_path = base_name
    peft_config.save_pretrained(str(folder))


# Where each method's weights file keeps the ``score`` head (GPT-2's has no bias).
HEAD_KEYS = {
    "lora": "base_model.model.score.weight",
    "adapter": "score.weight",
    "full": "score.weight",
}


def fold_temperature(run: Path, temperature: float, report: dict) -> None:
    """Divide the head by ``temperature`` (so every logit is), then record both."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    info = read_info(run)
    path = run / WEIGHT_FILES[info.method][1]
    tensors = load_safetensors(path)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    key = HEAD_KEYS[info.method]
    tensors[key] = (tensors[key].double() / temperature).to(tensors[key].dtype)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    write_json(run / EVAL_RESULTS, {**read_eval_results(run), "calibration": report})
    info.temperature *= temperature  # what the head has been divided by, in all
    write_info(run, info)


def check_weights(run: Path, method: str) -> None:
    """Every weight file is there and readable: a corrupt file is named, not a traceback."""
    for name in WEIGHT_FILES[method]:
        if not (run / name).is_file():
            raise UserError(f"run folder {run} is missing {name}")
    config = read_json(run / WEIGHT_FILES[method][0])
    if method != "full":
        check_adapter_config(run / ADAPTER_CONFIG, config, method)
    load_safetensors(run / WEIGHT_FILES[method][1])


def check_adapter_config(path: Path, config: dict, method: str) -> None:
    """adapter_config.json must be what run.json's method says, with what loading needs."""
    kind = "lora" if config.get("peft_type") == "LORA" else None
    kind = "adapter" if config.get("adapter_type") == "bottleneck" else kind
    if kind != method:
        article = "an" if kind == "adapter" else "a"
        found = (
            f"{article} {kind} run's" if kind else "neither a LoRA nor a bottleneck adapter config"
        )
        raise UserError(f"{path} is {found}, but {INFO} says {method}")
    needed = ("size",) if method == "adapter" else ("r", "target_modules")
    missing = [key for key in needed if key not in config]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: not a usable {method} config")


def read_lora(run: Path) -> dict:
    """The tensors of a LoRA run (PEFT's layout: LoRA weights and the ``score`` head)."""
    check_weights(run, "lora")
    return load_safetensors(run / ADAPTER_WEIGHTS)


def read_bottleneck(run: Path) -> tuple[dict, dict]:
    """(config, tensors) of a bottleneck adapter run."""
    config = read_json(run / ADAPTER_CONFIG)
    check_adapter_config(run / ADAPTER_CONFIG, config, "adapter")
    return config, load_safetensors(run / ADAPTER_WEIGHTS)


def load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"missing file {path}")
    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"corrupt weights file {path}: {e}") from None


def load_full_model(run: Path):
    """A full or merged run: a plain transformers folder."""
    from transformers import AutoModelForSequenceClassification

    check_weights(run, "full")
    return AutoModelForSequenceClassification.from_pretrained(str(run), trust_remote_code=False)


def weights_size_mb(run: Path) -> float:
    names = {n for files in WEIGHT_FILES.values() for n in files if n.endswith(".safetensors")}
    return sum((run / n).stat().st_size for n in names if (run / n).is_file()) / 2**20


# ---------------------------------------------------------------------------- new folders
def run_entries() -> set[str]:
    """Every name a run folder of ours can hold (weights, record, metrics, checkpoints...)."""
    names = {n for files in WEIGHT_FILES.values() for n in files} | set(SEALED_FILES)
    names |= {INFO, HYPERPARAMETERS, METRICS, EVAL_RESULTS, REPORT, CHECKPOINT, BUNDLED_BASE}
    names |= {LOCK, CHECKPOINT + ".tmp", CHECKPOINT + ".old", ".best.tmp", ".tokenizer.tmp"}
    return names


def foreign_entries(out: Path) -> list[str]:
    """What a folder holds besides a run's own files (never deleted by --overwrite)."""
    entries = [p.name for p in out.iterdir()] if out.is_dir() else []
    return sorted(n for n in entries if n not in run_entries() and not n.endswith(".tmp"))


def refuse_foreign(out: Path) -> None:
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise UserError(
            f"{out} holds files that are not a weibo-senti run's ({shown}); --out must be a new "
            "folder or a run folder: choose another --out"
        )


def check_new(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to train over a file or, without ``overwrite``, a run; and
    ``overwrite`` replaces only a run folder of ours, never a folder with anything else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose another --out")
    entries = [p.name for p in out.iterdir()] if out.is_dir() else []
    if not [n for n in entries if n != LOCK]:
        return
    refuse_foreign(out)
    if not overwrite:
        raise UserError(
            f"{out} already holds a run: pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )


def lock_run(out: Path):
    """Take the folder's OS lock (released when the process ends, however it ends); a second
    writer — another training, a --resume, an --overwrite — gets one line instead of mixing
    two runs in one folder."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"{out} is in use by another weibo-senti training; wait for it to end or choose "
            "another --out"
        ) from None
    return lock


def prepare_new(out: Path, overwrite: bool) -> None:
    """An empty folder for a new run (the caller holds its lock); an existing run is replaced
    only with ``overwrite``."""
    check_new(out, overwrite)
    for entry in out.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def start_run(out: Path, info: RunInfo, tokenizer, hyperparameters: dict) -> None:
    """Tokenizer, hyperparameters and the (incomplete) record of a new training run."""
    import yaml

    staging = out / ".tokenizer.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    save_tokenizer(tokenizer, staging)
    move_files_into(staging, out)
    write_text(
        out / HYPERPARAMETERS, yaml.safe_dump(hyperparameters, sort_keys=False, allow_unicode=True)
    )
    (out / METRICS).unlink(missing_ok=True)
    write_info(out, info)


def hyperparameters_file(run: Path) -> Path:
    """The run's hyperparameters.yaml (a TrainConfig YAML file), which must exist."""
    path = run / HYPERPARAMETERS
    if not path.is_file():
        raise UserError(f"{run} has no {HYPERPARAMETERS} to resume")
    return path


def save_best(run: Path, model, method: str, base_name: str, results: dict) -> None:
    """Weights first (each file an atomic rename), then the results that name the epoch."""
    staging = run / ".best.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    save_weights(model, method, staging, base_name)
    move_files_into(staging, run)
    write_json(run / EVAL_RESULTS, results)


def read_eval_results(run: Path) -> dict:
    return read_json(run / EVAL_RESULTS)


def staging_dir(out: Path, overwrite: bool, inputs: list[Path] = ()) -> Path:
    """A fresh ``<out>.tmp`` to build a derived folder in (merge, combine); see ``publish``.
    ``overwrite`` replaces a run folder only: never an input run, never a folder of other files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose another --out")
    if any(out.resolve() == Path(r).resolve() for r in inputs):
        raise UserError(f"--out {out} is an input run: choose another folder")
    if out.is_dir() and any(out.iterdir()):
        refuse_foreign(out)
        if not overwrite:
            raise UserError(f"{out} already exists; pass --overwrite to replace it")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(staging: Path, out: Path) -> None:
    seal(staging)
    replace_dir(staging, out)


@contextlib.contextmanager
def building(out: Path, overwrite: bool, inputs: list[Path] = ()):
    """A staging folder for a derived run (merge, combine), published as ``out`` when the block
    ends; on any failure (a full disk, Ctrl-C) it is removed and ``out`` stays as it was."""
    staging = staging_dir(out, overwrite, inputs)
    try:
        yield staging
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_model_folder(folder: Path, model, tokenizer, info: RunInfo) -> None:
    """A merged run: a plain transformers folder (config with pad id and labels) + record."""
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(folder), safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    write_info(folder, info)


def copy_run_files(run: Path, folder: Path) -> None:
    """Every file of a run but its record (an exported run writes its own)."""
    for f in run.iterdir():
        if f.is_file() and f.name not in (INFO, LOCK):
            shutil.copy2(f, folder / f.name)


def bundle_base(folder: Path, base: Path) -> None:
    """The base's files, with this machine's normal modes (a read-only source stays apart)."""
    copy = folder / BUNDLED_BASE
    ignore = shutil.ignore_patterns(".*")
    shutil.copytree(base, copy, ignore=ignore, copy_function=shutil.copyfile)
    for d in [copy, *(p for p in copy.rglob("*") if p.is_dir())]:
        os.chmod(d, normal_dir_mode(folder))


# ---------------------------------------------------------------------------- metrics
def append_metrics(run: Path, record: dict) -> None:
    append_jsonl(run / METRICS, record)


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.is_file():
        raise UserError(f"missing file {path}")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by an interruption
    return rows


def trim_metrics(run: Path, last_step: int, epochs_done: int) -> None:
    """Drop lines written after the checkpoint: the resumed run writes them again."""
    path = run / METRICS
    if not path.is_file():
        return

    def before(r: dict) -> bool:
        if r.get("type") == "eval":  # an epoch validated but not yet checkpointed
            return isinstance(r.get("epoch"), int) and r["epoch"] <= epochs_done
        return isinstance(r.get("step"), int) and r["step"] <= last_step

    kept = [r for r in read_metrics(run) if before(r)]
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def report_path(run: Path) -> Path:
    return Path(run) / REPORT


# ---------------------------------------------------------------------------- checkpoint
def checkpoint_staging(out: Path) -> Path:
    """Where the next checkpoint is written before ``commit_checkpoint`` swaps it in."""
    return out / (CHECKPOINT + ".tmp")


def checkpoint_weight_names(folder: Path) -> set[str]:
    """The weights a checkpoint holds (Accelerate's ``model.safetensors``); names a corrupt file."""
    return set(load_safetensors(folder / "model.safetensors"))


def drop_staging(out: Path) -> None:
    """Half-written staging folders (a failed save): the last committed state stays."""
    for name in (CHECKPOINT + ".tmp", ".best.tmp", ".tokenizer.tmp"):
        shutil.rmtree(out / name, ignore_errors=True)


def commit_checkpoint(out: Path, staging: Path, progress: dict) -> None:
    """Progress last: a staging folder without it is never taken for a checkpoint."""
    write_json(staging / CHECKPOINT_STATE, progress)
    replace_dir(staging, out / CHECKPOINT)


def require_complete(run: Path, info: RunInfo) -> None:
    """A run still training (or killed) has a best epoch so far, not yet calibrated or sealed:
    prediction takes it only when asked."""
    if not info.complete:
        raise UserError(
            f"{run} has not finished training (complete: false in {INFO}): continue it with "
            f"weibo-senti train --resume --out {run}, or pass --allow-incomplete to use its "
            "best epoch so far (not calibrated, files not sealed)"
        )


def is_complete(out: Path) -> bool:
    return (out / INFO).is_file() and read_info(out).complete


def recover_checkpoint(out: Path) -> None:
    """Repair what a kill left (one process does this, before ``open_checkpoint``)."""
    ckpt, old = out / CHECKPOINT, out / (CHECKPOINT + ".old")
    if not (ckpt / CHECKPOINT_STATE).is_file() and (old / CHECKPOINT_STATE).is_file():
        shutil.rmtree(ckpt, ignore_errors=True)
        old.rename(ckpt)  # killed in the middle of the swap


def open_checkpoint(out: Path) -> tuple[Path, dict]:
    """The checkpoint to resume from and its progress (read only)."""
    ckpt = out / CHECKPOINT
    if not out.is_dir():
        raise UserError(f"{out} does not exist; nothing to resume")
    if not (ckpt / CHECKPOINT_STATE).is_file():
        raise UserError(
            f"{out} has no checkpoint to resume from; train it again with --overwrite "
            "(or choose another --out)"
        )
    return ckpt, read_json(ckpt / CHECKPOINT_STATE)


def finish(out: Path) -> None:
    """Mark the run complete, then drop the checkpoint (a kill in between: see drop_checkpoint)."""
    mark_complete(out)
    drop_checkpoint(out)


def drop_checkpoint(out: Path) -> None:
    for leftover in (out / CHECKPOINT, out / (CHECKPOINT + ".old"), checkpoint_staging(out)):
        shutil.rmtree(leftover, ignore_errors=True)
