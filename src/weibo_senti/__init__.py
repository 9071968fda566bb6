"""weibo-senti: fine-tune a Chinese GPT-2 for Weibo sentiment (LoRA, adapters, full) and serve it."""

__version__ = "0.1.0"

from .config import TrainConfig  # noqa: E402
from .errors import UserError  # noqa: E402


def __getattr__(name):
    # Heavy imports (torch, transformers) only when these are used.
    if name == "SentimentClassifier":
        from .predict import SentimentClassifier

        return SentimentClassifier
    if name == "train":
        from .train import train

        return train
    raise AttributeError(name)


__all__ = ["SentimentClassifier", "TrainConfig", "UserError", "train", "__version__"]
