"""`merge`: fold a LoRA run into its base, giving a plain transformers model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import modeling
from .errors import UserError
from .files import replace_dir
from .hub import resolve_base_model
from .predict import SentimentClassifier
from .runs import read_run_info, write_run_info


def _fresh_tmp(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def merge(
    run: Path,
    out: Path,
    base_model: str | None = None,
    export: bool = False,
    overwrite: bool = False,
) -> Path:
    """LoRA folded into the weights (loads without peft); ``export`` for bottleneck adapters."""
    info = read_run_info(run)
    if info["method"] == "full":
        raise UserError(f"{run} is a full fine-tuning run: it is a plain model folder already")
    if info["method"] == "adapter" and not export:
        raise UserError(
            "bottleneck adapters are layers of their own (down-projection, GELU, up-projection) "
            "and cannot be folded into GPT-2's weights; pass --export to write base + adapter "
            "as one self-contained run folder instead"
        )
    clf = SentimentClassifier.load(run, base_model, precision="fp32", merge=False, name="default")
    tmp = _fresh_tmp(out, overwrite)
    cfg = _RunCfg(info)
    if info["method"] == "lora":
        model = modeling.fold_for_export(clf.bank)
        model.save_pretrained(str(tmp), safe_serialization=True)
        clf.tokenizer.save_pretrained(str(tmp))
        cfg.method = "full"
        write_run_info(tmp, cfg, model.config, clf.tokenizer, merged_from=str(run))
    else:
        for f in run.iterdir():
            if f.is_file() and f.name != "run.json":
                shutil.copy2(f, tmp / f.name)
        base = tmp / "base"  # the base's own files, unchanged
        source = resolve_base_model(base_model or info["base_model"])
        shutil.copytree(source, base, ignore=shutil.ignore_patterns(".*"))
        cfg.base_model = "base"  # resolved relative to the run folder
        write_run_info(tmp, cfg, clf.bank.base.config, clf.tokenizer, exported_from=str(run))
    replace_dir(tmp, out)
    return out


class _RunCfg:
    """What write_run_info needs, taken from an existing run."""

    def __init__(self, info: dict):
        self.method = info["method"]
        self.base_model = info["base_model"]
        self.max_length = info["max_length"]
        self.text_column = info.get("text_column", "review")
