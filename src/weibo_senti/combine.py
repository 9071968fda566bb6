"""`combine`: a weighted combination of LoRA runs (PEFT's add_weighted_adapter) as a new run."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from .bank import LORA_HEAD
from .errors import UserError
from .files import replace_dir
from .merge import _fresh_tmp, _RunCfg
from .predict import SentimentClassifier
from .runs import read_run_info, write_run_info

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
    if combination_type not in COMBINATIONS:
        raise UserError(f"--combination-type must be one of {', '.join(COMBINATIONS)}")
    infos = [read_run_info(r) for r in runs]
    for r, info in zip(runs, infos):
        if info["method"] != "lora":
            raise UserError(f"{r} is a {info['method']} run: only LoRA runs can be combined")
    names = [f"run{i}" for i in range(len(runs))]
    clf = SentimentClassifier.load(
        runs[0], base_model, precision="fp32", merge=False, name=names[0]
    )
    for name, r in zip(names[1:], runs[1:]):
        clf.add_adapter(name, r)  # refuses runs on another base
    peft_model = clf.bank.model
    kw = {"density": density} if density is not None else {}
    try:
        peft_model.add_weighted_adapter(
            [clf.bank.ids[n] for n in names],
            weights,
            "combined",
            combination_type=combination_type,
            **kw,
        )
    except ValueError as e:  # e.g. "linear" with different ranks
        raise UserError(
            f"PEFT cannot combine these adapters with {combination_type}: {e}"
        ) from None
    heads = [clf.bank.heads.heads[clf.bank.ids[n]].weight.detach() for n in names]
    if head == "weighted":
        head_weight = sum(w * h for w, h in zip(weights, heads))
    elif head.isdigit() and int(head) < len(runs):
        head_weight = heads[int(head)]
    else:
        raise UserError(f"--head must be 'weighted' or a run index 0..{len(runs) - 1}")

    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, adapter_name="combined")
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    state[LORA_HEAD] = head_weight.cpu().contiguous().to(torch.float32)
    config = peft_model.peft_config["combined"]
    config.modules_to_save = ["classifier", "score"]
    config.task_type = "SEQ_CLS"
    config.base_model_name_or_path = infos[0]["base_model"]
    tmp = _fresh_tmp(out, overwrite)
    save_file(state, str(tmp / "adapter_model.safetensors"))
    config.save_pretrained(str(tmp))
    clf.tokenizer.save_pretrained(str(tmp))
    write_run_info(
        tmp,
        _RunCfg(infos[0]),
        clf.bank.base.config,
        clf.tokenizer,
        combined_from=[str(r) for r in runs],
        weights=list(weights),
        combination_type=combination_type,
        head=head,
    )
    replace_dir(tmp, out)
    return out
