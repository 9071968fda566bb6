"""The command line of the scripts that write a documentation page from the code
(architecture.py, commands_page.py): rewrite the page, or with --check only say whether the
committed one is current (exit 1 if not)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_or_check(page: Path, render, description: str) -> None:
    ap = argparse.ArgumentParser(description=" ".join(description.split()))
    ap.add_argument("--check", action="store_true", help="only say whether the page is current")
    args = ap.parse_args()
    text, name = render(), page.relative_to(ROOT)
    if args.check:
        current = page.is_file() and page.read_text(encoding="utf-8") == text
        print(f"{name} is " + ("current" if current else "out of date"))
        sys.exit(0 if current else 1)
    page.write_text(text, encoding="utf-8")
    print(f"wrote {name}")
