"""`merge`: fold a LoRA run into its base, giving a plain transformers model folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import runfolder
from .errors import UserError
from .predict import SentimentClassifier


def merge(
    run: Path,
    out: Path,
    base_model: str | None = None,
    export: bool = False,
    overwrite: bool = False,
) -> Path:
    """LoRA folded into the weights (loads without peft); ``export`` for bottleneck adapters."""
    info = runfolder.read_info(run)
    runfolder.require_complete(run, info)
    runfolder.staging_dir(out, overwrite, [run]).rmdir()  # refused before the model loads
    if info.method == "full":
        raise UserError(f"{run} is a full fine-tuning run: it is a plain model folder already")
    if info.method == "adapter" and not export:
        raise UserError(
            "bottleneck adapters are layers of their own (down-projection, GELU, up-projection) "
            "and cannot be folded into GPT-2's weights; pass --export to write base + adapter "
            "as one self-contained run folder instead"
        )
    clf = SentimentClassifier.load(run, base_model, precision="fp32", merge=False, name="default")
    with runfolder.building(out, overwrite, [run]) as staging:
        if info.method == "lora":
            merged = dataclasses.replace(
                info, method="full", origin={"merged_from": str(run.resolve())}
            )
            runfolder.save_model_folder(staging, clf.bank.fold(), clf.tokenizer, merged)
        else:
            runfolder.copy_run_files(run, staging)
            runfolder.bundle_base(staging, runfolder.resolve_base(run, info, base_model))
            base = dataclasses.replace(info.base, bundled=True, path=None)
            exported = dataclasses.replace(
                info, base=base, origin={"exported_from": str(run.resolve())}
            )
            runfolder.write_info(staging, exported)
    return out
