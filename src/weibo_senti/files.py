"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and then rename the finished file onto ``path``."""
    path = Path(path)
    if path.is_dir():
        from .errors import UserError

        raise UserError(f"{path} is a directory; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # Created exclusively with 0o666 so the umask gives it normal permissions (mkstemp: 0600).
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = tmp.stat().st_mode & 0o777
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)  # a writer that replaced the file (safetensors) left it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def append_jsonl(path: str | Path, obj) -> None:
    # Appends of one short line are atomic enough: a torn last line is skipped by readers.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a finished folder into place; at every instant ``final_dir`` or ``.old`` is whole."""
    mode = normal_file_mode(tmp_dir)
    for f in tmp_dir.rglob("*"):
        if f.is_file():
            os.chmod(f, mode)  # as in move_files_into
    old = final_dir.with_name(final_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)


def normal_file_mode(folder: Path) -> int:
    """The mode a new file gets here under the umask (read without changing the umask)."""
    probe = folder / f".mode.{secrets.token_hex(6)}"
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def normal_dir_mode(parent: Path) -> int:
    """The mode a new folder gets here under the umask (read without changing the umask)."""
    probe = parent / f".mode.{secrets.token_hex(6)}"
    probe.mkdir(mode=0o777)
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.rmdir()


def move_files_into(src_dir: Path, dst_dir: Path) -> list[str]:
    """Rename every file of ``src_dir`` into ``dst_dir`` (each rename atomic), then drop src.

    Files written by other libraries through temporary files (0600) get the normal mode, so
    a run folder on shared storage is readable like any other file there."""
    names, mode = [], normal_file_mode(dst_dir)
    for f in sorted(src_dir.iterdir()):
        os.chmod(f, mode)
        os.replace(f, dst_dir / f.name)
        names.append(f.name)
    src_dir.rmdir()
    return names
