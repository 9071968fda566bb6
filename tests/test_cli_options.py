"""One CLI vocabulary: train's flags come from TrainConfig, every option is described."""

from __future__ import annotations

import typer.main
from test_cli import cli

from weibo_senti import TrainConfig, __version__
from weibo_senti.cli import app


def test_train_flags_are_the_config_fields():
    train = typer.main.get_command(app).commands["train"]
    flags = {p.name for p in train.params} - {"config", "resume", "overwrite"}
    assert flags == set(TrainConfig.model_fields)


def test_every_option_of_every_command_is_described():
    undescribed = [
        f"{name} --{p.name}"
        for name, command in typer.main.get_command(app).commands.items()
        for p in command.params
        if p.param_type_name == "option" and not (getattr(p, "help", "") or "").strip()
    ]
    assert not undescribed


def test_version():
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"weibo-senti {__version__}"


def test_precision_names_agree_across_commands():
    helps = {
        name: next(p.help for p in command.params if p.name == "precision")
        for name, command in typer.main.get_command(app).commands.items()
        if any(p.name == "precision" for p in command.params)
    }
    assert set(helps) == {"train", "pretrain", "evaluate", "predict", "serve", "compare"}
    assert all("fp32" in h and "bf16" in h and "| no" not in h for h in helps.values())


def test_commands_of_an_extra_say_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    missing = {"fastapi", "matplotlib"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    code, _, err = cli("serve", tmp_path)
    assert code == 2 and "pip install 'weibo-senti[serve]'" in err
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "pip install 'weibo-senti[compare]'" in err
