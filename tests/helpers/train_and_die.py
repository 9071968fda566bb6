"""Train from a YAML config and kill this process with SIGKILL at a given step (rank 0 only).

Run under `torchrun` by tests/test_distributed.py: a real kill, no cleanup.
"""

import logging
import os
import signal
import sys

from weibo_senti import TrainConfig
from weibo_senti.train import train

config, kill_at = sys.argv[1], int(sys.argv[2])
logging.basicConfig(level=logging.INFO, format="%(message)s")


def die(step: int) -> None:
    if step == kill_at and os.environ.get("RANK", "0") == "0":
        os.kill(os.getpid(), signal.SIGKILL)


train(TrainConfig.from_sources(config), on_step=die)
