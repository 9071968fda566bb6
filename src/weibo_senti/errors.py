"""What the CLI prints as one line instead of a traceback.

``UserError`` is ours: bad input, a missing file, an unreachable hub. ``one_line`` also names the
known classes of library errors a user can cause (a full disk, a read-only folder, a corrupt
Parquet or ONNX file, a bad option value), so the CLI's edge answers them in one line with the
usage-error exit code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input, a missing file or an unreachable hub: something the user can fix."""


# errno values a user causes and can fix: the place is full, read-only, missing or not theirs.
USER_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
}
# Library errors that only come from their input files (matched by module: importing pyarrow or
# onnxruntime just to test an exception's class would cost every command their import time).
INPUT_ERROR_MODULES = {
    "pyarrow.lib": "cannot read the file with pyarrow",
    "onnxruntime.capi.onnxruntime_pybind11_state": "ONNX Runtime failed",
    "safetensors_rust": "cannot read or write a safetensors file",
    "safetensors._safetensors_rust": "cannot read or write a safetensors file",
    "yaml.scanner": "cannot parse YAML",
    "yaml.parser": "cannot parse YAML",
}


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC/EDQUOT from Python; safetensors' Rust error carries it as text, torch's zip
    writer only as a short write ("unexpected pos", "file write failed")."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if "No space left on device" in text or "StorageFull" in text:
        return True
    return "inline_container.cc" in text and (
        "unexpected pos" in text or "file write failed" in text
    )


def one_line(error: BaseException) -> str | None:
    """The one line for an error a user caused; None for a bug (which keeps its traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if type(error).__name__ == "ValidationError" and type(error).__module__.startswith("pydantic"):
        from .config import describe

        return describe(error, "option")
    if is_disk_full(error):
        where = getattr(error, "filename", None)
        return f"disk full{f' writing {where}' if where else ''}: free some space and run again"
    if isinstance(error, OSError) and error.errno in USER_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{USER_ERRNOS[error.errno]}{where}"
    what = INPUT_ERROR_MODULES.get(type(error).__module__)
    if what:
        return f"{what}: {_first_line(error)}"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
