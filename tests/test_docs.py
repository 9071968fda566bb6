"""The README a newcomer reads first, the documentation site, and the layout rules the code
keeps (no function over 60 lines, the architecture page generated from the code)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_FUNCTION_LINES = 60


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (how the README's links are followed there)."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(path: Path) -> set[str]:
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            lines.append(github_slug(line.lstrip("#")))
    return set(lines)


def test_the_readme_is_short_and_starts_with_what_a_newcomer_needs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, len(lines)
    first_screen = "\n".join(lines[:45])
    assert "## Set up" in first_screen
    assert "weibo-senti train" in first_screen and "--text" in first_screen  # the main job
    assert re.search(r"weibo-senti predict \S+ --input \S+ --output", first_screen)  # my file


def test_the_readme_set_up_and_test_commands_are_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace(" -q ", " ")
    ci_lines = {line.strip() for line in ci.splitlines()}
    for command in (
        "python3 -m venv .venv",
        "pip install torch==2.13.0",
        'pip install -e ".[test]"',
        "python -m pytest",
    ):
        assert command in readme, command
        assert command in ci_lines, command
    assert "mkdocs build --strict" in ci


def test_every_link_of_the_readme_resolves_on_github():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 20, links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        path = README if not target else ROOT / target
        assert path.exists(), f"README links to {link}: no such file"
        if anchor:
            assert anchor in headings(path), f"README links to {link}: no such heading"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs: pip install -e '.[docs]'"
)
def test_the_site_builds_strictly(tmp_path):
    """Broken links, anchors and API references fail the build (mkdocs.yml's validation)."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for generated in (  # headings mkdocstrings writes: the class, and members of both mixins
        "weibo_senti.predict.SentimentClassifier.predict_logits",
        "weibo_senti.predict.SentimentClassifier.add_adapter",  # Loading
        "weibo_senti.predict.SentimentClassifier.tune",  # EnginePaths
        "weibo_senti.config.TrainConfig",
        "weibo_senti.bulk.Predictor",
    ):
        assert f'id="{generated}"' in api, generated
    assert (tmp_path / "site" / "figures" / "page.png").is_file()


def test_the_architecture_page_is_generated_from_the_code():
    architecture = load_script("architecture")
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert page == architecture.render(), "run: python scripts/architecture.py"
    assert {"predict", "loading", "engine_paths", "autotune", "serve"} <= set(
        architecture.modules()
    )


def test_the_architecture_page_names_only_what_exists():
    """The hand-written flow names functions (`data.stream_records`): each must exist."""
    architecture = load_script("architecture")
    named = re.findall(r"`(\w+)\.(\w+)`", architecture.INTRO)
    assert len(named) >= 2, named
    import weibo_senti

    for owner, name in named:  # a module of the package, or a name it exports
        if importlib.util.find_spec(f"weibo_senti.{owner}") is not None:
            found = importlib.import_module(f"weibo_senti.{owner}")
        else:
            found = getattr(weibo_senti, owner)
        assert hasattr(found, name), (owner, name)


def test_the_commands_page_is_generated_from_the_cli():
    commands = load_script("commands_page")
    page = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert page == commands.render(), "run: python scripts/commands_page.py"
    for name in ("train", "pretrain", "select", "evaluate", "predict", "serve", "combine"):
        assert f"## `{name}`" in page, name
    assert "`--chunk-rows` | `4096` |" in page  # options with their defaults


def test_the_architecture_page_sees_imports_anywhere_in_a_module(tmp_path):
    architecture = load_script("architecture")
    source = tmp_path / "alpha.py"
    source.write_text(
        '"""Alpha owns a thing.\n\nMore."""\nfrom . import beta\n\n'
        "def f():\n    from .gamma import g\n    import pyarrow\n"
        "try:\n    import captum\nexcept ImportError:\n    captum = None\n"
    )
    info = architecture.scan(source, {"alpha", "beta", "gamma"})
    assert info == {
        "doc": "Alpha owns a thing.",
        "imports": {"beta", "gamma"},
        "needs": {"explain"},  # imported on import, in a top-level try
        "lazily": {"parquet"},  # only inside a function
    }


def long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_is_over_60_lines():
    files = [p for d in ("src", "tests", "scripts", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    too_long = [f for path in files for f in long_functions(path)]
    assert not too_long, too_long


def test_the_length_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "long.py"
    source.write_text(f"def long():\n{body}\n")
    assert long_functions(source, tmp_path) == ["long.py:1 long (61 lines)"]
