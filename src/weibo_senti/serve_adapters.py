"""Adapters loaded and unloaded while `serve` runs: run folders under one root, an LRU bound,
and in-flight counts so that an adapter is unloaded only after the requests it accepted.

Every request names its adapter when it is accepted (`acquire`, in the event loop) and gives
it back once answered (`release`); `unload` first stops new requests to the adapter, then waits
until its count is zero, then removes it under the model lock. A request therefore either gets
its adapter's answer or a 404 — never another adapter's answer.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TOKEN_ENV = "WEIBO_SENTI_ADMIN_TOKEN"


@dataclass
class AdminError(Exception):
    """An admin request refused: the HTTP status and the one line that says why."""

    status: int
    message: str


def check_token(configured: str | None, authorization: str | None) -> None:
    """Admin actions are off without a configured token; with one, `Bearer <token>` is needed."""
    if not configured:
        raise AdminError(
            403, f"adapter administration is off: start serve with --admin-token or {TOKEN_ENV}"
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), configured.strip().encode()
    ):
        raise AdminError(401, "admin token missing or wrong (Authorization: Bearer <token>)")


def run_under_root(root: Path | None, relative: str) -> Path:
    """The run folder `relative` names inside `root`; nothing outside the root is ever opened:
    absolute paths, `..` and links (of the folder or of any file in it) out of it are refused."""
    if root is None:
        raise AdminError(403, "loading adapters needs --adapter-root: none was given")
    outside = AdminError(400, f"path must name a folder inside the adapter root, not {relative!r}")
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise outside
    try:
        root = root.resolve()
        folder = (root / relative).resolve()
        if not folder.is_relative_to(root) or folder == root:
            raise outside
        if not folder.is_dir():
            raise AdminError(404, f"no run folder {relative!r} under the adapter root")
        # the files read are the folder's own (run.json, weights, tokenizer): none may lead out
        for entry in folder.iterdir():
            if not entry.resolve().is_relative_to(root):
                raise AdminError(400, f"{relative}/{entry.name} links out of the adapter root")
    except (ValueError, OSError, RuntimeError) as e:  # NUL, name too long, a link loop
        raise AdminError(
            400, f"path {relative[:80]!r} cannot be used: {type(e).__name__}"
        ) from None
    return folder


class RuntimeAdapters:
    """The serving side of a classifier's adapter bank: names, uses, LRU order, admin actions."""

    def __init__(self, clf, root=None, max_adapters: int = 16, telemetry=None):
        if max_adapters < 1:
            raise UserError("--max-adapters must be at least 1")
        if len(clf.adapters) > max_adapters:
            raise UserError(
                f"{len(clf.adapters)} adapters given at start, more than --max-adapters "
                f"{max_adapters}"
            )
        self.clf = clf
        # The classifier switches adapters in place: one thread at a time may use it.
        self.model_lock = threading.Lock()
        self.root = Path(root) if root else None
        self.max_adapters = max_adapters
        self.in_flight: dict[str, int] = {}
        self.last_used = {name: time.monotonic() for name in clf.adapters}
        self.sources = {name: "given at start" for name in clf.adapters}
        self.closing: set[str] = set()
        self.changed = asyncio.Condition()  # notified whenever an in-flight count drops
        self.admin = asyncio.Lock()  # one load/unload at a time
        self.telemetry = telemetry
        # bumped (under the model lock) whenever the loaded adapters change: copies of the
        # classifier made before (the explanation lane's) are stale
        self.generation = 0
        self._count()

    def _count(self, evicted: int = 0) -> None:
        if self.telemetry is not None:
            self.telemetry.adapters.set(len(self.clf.adapters))
            self.telemetry.evictions.inc(evicted)

    # ------------------------------------------------------------------ requests
    def acquire(self, name: str | None) -> str | None:
        """The adapter a request will be answered by, held until `release`; KeyError if none."""
        if self.clf.bank is None:
            if name is not None:
                raise KeyError(name)
            return None
        name = self.default() if name is None else name  # "" names no adapter: 404
        if name not in self.clf.adapters or name in self.closing:
            raise KeyError(name)
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        self.last_used[name] = time.monotonic()
        return name

    async def release(self, name: str | None) -> None:
        if name is None:
            return
        self.in_flight[name] -= 1
        async with self.changed:
            self.changed.notify_all()

    def default(self) -> str | None:
        """The active adapter; while it is being unloaded, the next one that stays (requests
        that name no adapter are never refused because of an unload)."""
        active = self.clf.active_adapter
        if active not in self.closing:
            return active
        return next((n for n in self.clf.adapters if n not in self.closing), None)

    def listing(self) -> dict:
        """Adapters that take requests, the default, the labels the default answers with
        (a single model's own), and per adapter its kind, labels, source and requests."""
        default = self.default()
        info = self.clf.info_of(default)
        return {
            "adapters": [n for n in self.clf.adapters if n not in self.closing],
            "default": default,
            "labels": list(info.labels),
            "labels_zh": list(info.labels_zh),
            "max_adapters": self.max_adapters,
            "details": {name: self._details(name) for name in self.clf.adapters},
        }

    def _details(self, name: str) -> dict:
        info = self.clf.info_of(name)
        return {
            "kind": self.clf.bank.kinds[name],
            "labels": list(info.labels),
            "labels_zh": list(info.labels_zh),
            "source": self.sources.get(name),
            "in_flight": self.in_flight.get(name, 0),
            "unloading": name in self.closing,
        }

    # ------------------------------------------------------------------ admin
    async def load(self, name: str, relative: str) -> dict:
        if self.clf.bank is None:
            raise AdminError(409, "this server holds one model without adapters (full or int8)")
        if not NAME.fullmatch(name or ""):
            raise AdminError(422, "name: 1-64 letters, digits, '.', '_' or '-'")
        folder = run_under_root(self.root, relative)
        async with self.admin:
            if name in self.closing:
                raise AdminError(409, f"'{name}' is being unloaded: retry when it is gone")
            if name in self.clf.adapters:
                raise AdminError(409, f"an adapter called '{name}' is already loaded")
            try:
                await asyncio.to_thread(self._locked, self._add_now, name, folder)
            except UserError as e:
                raise AdminError(422, str(e).replace(str(folder), relative)) from None
            self.last_used[name] = time.monotonic()
            self.sources[name] = relative
            evicted = await self._evict(keep=name)
            self._count(len(evicted))  # evictions: counted here, the gauge in _remove
        kind, labels = self.clf.bank.kinds[name], self.clf.labels_of(name)
        return {"loaded": name, "kind": kind, "labels": labels, "evicted": evicted}

    async def unload(self, name: str) -> dict:
        async with self.admin:
            staying = self._staying()
            if self.clf.bank is None or name not in staying:
                raise AdminError(404, f"no adapter called '{name}' is loaded")
            if len(staying) == 1:
                raise AdminError(409, f"'{name}' is the only adapter: load another first")
            self.closing.add(name)  # from here on, new requests for it get 404
        # the admin lock is free while its requests finish: other loads and unloads go on
        await self._remove(name)
        return {"unloaded": name, "default": self.clf.active_adapter}

    def _staying(self) -> list[str]:
        return [n for n in self.clf.adapters if n not in self.closing]

    async def _evict(self, keep: str) -> list[str]:
        evicted = []
        while len(self._staying()) > self.max_adapters:
            others = [n for n in self._staying() if n != keep]
            oldest = min(others, key=lambda n: self.last_used.get(n, 0.0))
            self.closing.add(oldest)
            await self._remove(oldest)
            evicted.append(oldest)
        return evicted

    async def _remove(self, name: str) -> None:
        """`name` is closing (no new requests); those accepted finish; then its weights go."""
        try:
            async with self.changed:
                await self.changed.wait_for(lambda: self.in_flight.get(name, 0) == 0)
            await asyncio.to_thread(self._locked, self._remove_now, name)
        finally:
            self.closing.discard(name)
        for table in (self.in_flight, self.last_used, self.sources):
            table.pop(name, None)
        self._count()

    def _add_now(self, name: str, folder: Path) -> None:
        try:
            self.clf.add_adapter(name, folder)
        finally:  # a failed load may still have touched the bank (unmerged it)
            self.generation += 1

    def _remove_now(self, name: str) -> None:
        successor = self.default()  # the default requests were already sent to meanwhile
        self.generation += 1
        self.clf.remove_adapter(name)
        if self.clf.active_adapter != successor and successor is not None:
            self.clf.use(successor)

    def _locked(self, fn, *args):
        with self.model_lock:
            return fn(*args)
