"""`combine`: a weighted combination of LoRA runs (PEFT's add_weighted_adapter) as a new run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from . import runfolder
from .errors import UserError

COMBINATIONS = (
    "cat",
    "linear",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)


def combine(
    runs: list[Path],
    weights: list[float],
    out: Path,
    combination_type: str = "cat",
    head: str = "weighted",
    base_model: str | None = None,
    density: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Combine LoRA runs trained on one base; heads are mixed with the same weights, or
    ``head`` names the index of the run whose head to keep. "cat" keeps each ΔW exactly
    (rank = sum of ranks), so the result is Σ wᵢ·ΔWᵢ."""
    if len(runs) < 2:
        raise UserError("combine needs at least two runs")
    if len(weights) != len(runs):
        raise UserError(f"{len(weights)} weights for {len(runs)} runs")
    if not all(math.isfinite(w) for w in weights) or not any(weights):
        raise UserError(f"--weights must be finite numbers, not all 0: {weights}")
    if combination_type not in COMBINATIONS:
        raise UserError(f"--combination-type must be one of {', '.join(COMBINATIONS)}")
    infos = [runfolder.read_info(r) for r in runs]
    runfolder.staging_dir(out, overwrite, runs).rmdir()  # refused before the models load
    for r, info in zip(runs, infos):
        runfolder.require_complete(r, info)
        if info.method != "lora":
            raise UserError(f"{r} is a {info.method} run: only LoRA runs can be combined")
    _same_task(runs, infos)
    peft_model, heads = _load_for_combination(runs, infos, base_model)
    uids = [f"run{i}" for i in range(len(runs))]
    kw = {"density": density} if density is not None else {}
    try:
        peft_model.add_weighted_adapter(
            uids, weights, "combined", combination_type=combination_type, **kw
        )
    except ValueError as e:  # e.g. "linear" with different ranks
        raise UserError(
            f"PEFT cannot combine these adapters with {combination_type}: {e}"
        ) from None
    state, config = _combined_state(peft_model, _combined_head(heads, weights, head))
    origin = {
        "combined_from": [str(r.resolve()) for r in runs],
        "weights": list(weights),
        "combination_type": combination_type,
        "head": head,
    }
    trainable = sum(v.numel() for v in state.values())
    combined = dataclasses.replace(infos[0], origin=origin, trainable_params=trainable)
    with runfolder.building(out, overwrite, runs) as staging:
        runfolder.save_lora_state(staging, state, config, infos[0].base.name)
        runfolder.save_tokenizer(runfolder.run_tokenizer(runs[0], infos[0]), staging)
        runfolder.write_info(staging, combined)
    return out


def _same_task(runs: list[Path], infos) -> None:
    """One label set (names and order: the heads' rows are mixed row by row) and one max
    length for every run."""
    first = infos[0]
    for r, info in zip(runs[1:], infos[1:]):
        if info.labels != first.labels:
            raise UserError(
                f"{r} has labels {', '.join(info.labels)}; {runs[0]} has "
                f"{', '.join(first.labels)}: combine needs one label set, in one order"
            )
        if info.max_length != first.max_length:
            raise UserError(
                f"{r} has max length {info.max_length}; {runs[0]} has {first.max_length}: "
                "combine needs one max length"
            )


# Where PEFT keeps a sequence classifier's head in a saved adapter (modules_to_save).
_HEAD_KEY = "base_model.model.score.weight"


def _combined_state(peft_model, head_weight: torch.Tensor) -> tuple[dict, object]:
    """The combined adapter's weights with the mixed head, and its config as a saved run's."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, adapter_name="combined")
    state = {k: v.detach().cpu().contiguous() for k, v in state.items() if "score" not in k}
    state[_HEAD_KEY] = head_weight.detach().cpu().contiguous().to(torch.float32)
    config = peft_model.peft_config["combined"]
    config.modules_to_save = ["classifier", "score"]
    config.task_type = "SEQ_CLS"
    return state, config


def _combined_head(heads: list, weights: list[float], head: str) -> torch.Tensor:
    if head == "weighted":
        return sum(w * h for w, h in zip(weights, heads))
    if head.isdigit() and int(head) < len(heads):
        return heads[int(head)]
    raise UserError(f"--head must be 'weighted' or a run index 0..{len(heads) - 1}")


def _load_for_combination(runs: list[Path], infos, base_model: str | None):
    """The runs' LoRA weights in one PEFT model, and their heads apart: PEFT's
    add_weighted_adapter refuses adapters that carry modules_to_save (the head)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from . import modeling

    for r, info in zip(runs[1:], infos[1:]):
        if not runfolder.same_base(info.base.fingerprint, infos[0].base.fingerprint):
            raise UserError(f"{r} was trained on a different base than {runs[0]}")
    base = runfolder.resolve_base(runs[0], infos[0], base_model)
    tokenizer = runfolder.run_tokenizer(runs[0], infos[0])
    model, heads = modeling.load_base_classifier(base, tokenizer, infos[0].labels), []
    for i, run in enumerate(runs):
        state = runfolder.read_lora(run)
        config = LoraConfig.from_pretrained(str(run))
        config.modules_to_save, config.task_type, config.inference_mode = None, None, True
        if i == 0:
            model = get_peft_model(model, config, adapter_name=f"run{i}")
        else:
            model.add_adapter(f"run{i}", config)
        lora = {k: v for k, v in state.items() if "lora_" in k}
        set_peft_model_state_dict(model, lora, adapter_name=f"run{i}")
        if _HEAD_KEY not in state:
            raise UserError(f"{run} has no score head")
        heads.append(state[_HEAD_KEY])
    return model, heads
