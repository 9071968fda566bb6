"""Artifact sizes on disk of each method for GPT-2 small (random weights): what a run ships.

python benchmarks/sizes.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from transformers import GPT2ForSequenceClassification

from weibo_senti import TrainConfig, modeling, runfolder


def main() -> None:
    from weibo_senti.cli import configure_process

    configure_process()
    sizes = {}
    for method in ("lora", "adapter", "full"):
        torch.manual_seed(0)
        model = modeling.apply_method(
            GPT2ForSequenceClassification(modeling.gpt2_small_config()), TrainConfig(method=method)
        )
        trainable, total = modeling.count_parameters(model)
        with tempfile.TemporaryDirectory() as tmp:
            runfolder.save_weights(model, method, Path(tmp), "gpt2-small-random")
            mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        sizes[method] = {"trainable": trainable, "all": total, "artifact_mb": round(mb, 2)}
        print(method, sizes[method], flush=True)
    Path("benchmarks/sizes.json").write_text(json.dumps(sizes, indent=2))


if __name__ == "__main__":
    main()
