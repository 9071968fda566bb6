"""Progress bars that a whole test run or a script can switch off with WEIBO_SENTI_NO_PROGRESS=1."""

import os

from tqdm.auto import tqdm


def progress(iterable=None, disable: bool = False, **kw):
    off = disable or os.environ.get("WEIBO_SENTI_NO_PROGRESS", "") not in ("", "0")
    return tqdm(iterable, disable=off, leave=False, dynamic_ncols=True, **kw)
