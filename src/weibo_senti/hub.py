"""Finding the base model and the default data: a local path, else the hub and a local cache."""

from __future__ import annotations

import csv
import io
import os
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .errors import UserError
from .files import atomic_write

DEFAULT_BASE_MODEL = "uer/gpt2-chinese-cluecorpussmall"
WEIBO_SENTI_URL = (
    "https://raw.githubusercontent.com/SophonPlus/ChineseNlpCorpus/master/"
    "datasets/weibo_senti_100k/weibo_senti_100k.csv"
)
WEIBO_SENTI_ROWS = 119_988
_MODEL_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer*"]
_MODEL_FILES += ["special_tokens_map.json"]


def cache_dir() -> Path:
    root = os.environ.get("WEIBO_SENTI_CACHE") or Path.home() / ".cache" / "weibo-senti"
    return Path(root)


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` or ``name``: not a path (``./x``, ``/x``, ``~/x``, ``a/b/c``)."""
    return bool(name) and not name.startswith((".", "/", "~")) and name.count("/") <= 1


def resolve_base_model(name_or_path: str) -> Path:
    """A local folder as it is, or a hub id downloaded once into the hub cache."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"base model folder {path} has no config.json")
        return path
    if not looks_like_hub_id(name_or_path):
        raise UserError(f"base model folder {name_or_path} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=_MODEL_FILES))
    except Exception as e:  # offline, unknown repo, gated: all mean "use a local folder"
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot get base model '{name_or_path}' from the Hugging Face Hub and it is not "
            f"cached ({reason}); pass --base-model PATH to a local GPT-2 folder "
            "(config.json, model.safetensors or pytorch_model.bin, vocab.txt)"
        ) from None


def default_data() -> Path:
    """weibo_senti_100k, downloaded once from SophonPlus/ChineseNlpCorpus and row-checked."""
    target = cache_dir() / "weibo_senti_100k.csv"
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(WEIBO_SENTI_URL, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc="weibo_senti_100k") as bar:
                while chunk := resp.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        raise UserError(
            f"cannot download weibo_senti_100k ({e}); pass --data PATH to a CSV with "
            "columns label,review (e.g. ../shared/data/weibo_senti_100k/train.csv)"
        ) from None
    raw = b"".join(chunks)
    rows = sum(1 for _ in csv.reader(io.StringIO(raw.decode("utf-8-sig")))) - 1
    if rows != WEIBO_SENTI_ROWS:
        raise UserError(
            f"downloaded weibo_senti_100k has {rows} rows, expected {WEIBO_SENTI_ROWS}; "
            "the source changed or the download broke: pass --data PATH instead"
        )
    atomic_write(target, lambda tmp: tmp.write_bytes(raw))
    return target
