"""A persistent cache of LLM answers: one sqlite file, one row per request key.

The key is the sha256 of the canonical JSON of everything that shapes an answer — provider, server
address, model, the messages and the sampling parameters — and never the API key. Rows are
committed one by one as answers arrive, so an interrupted run keeps what it already received and a
re-run asks only for the rest. Only non-empty text answers are ever stored.

Location: ``$UNISEG_CACHE/llm/responses.sqlite``, else ``<artifacts root>/.cache/llm/responses.sqlite``.
"""
from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from uniseg_cli.artifacts import sha256_json
from uniseg_cli.errors import UsageError

CACHE_FILE = "responses.sqlite"


def default_cache_dir(artifacts_root: str | Path | None = None) -> Path:
    """``$UNISEG_CACHE/llm`` if set, else ``<artifacts root>/.cache/llm``."""
    env = os.environ.get("UNISEG_CACHE")
    if env:
        return Path(env) / "llm"
    from uniseg_cli.artifacts import artifacts_root as _root

    return _root(artifacts_root) / ".cache" / "llm"


def request_key(**parts: Any) -> str:
    """The cache key of a request: sha256 of the canonical JSON of its parts (no secrets!)."""
    for k in parts:
        if k.lower() in ("api_key", "key", "authorization", "token", "headers"):
            raise ValueError(f"refusing to put {k!r} into a cache key (secrets never reach the cache)")
    return sha256_json(parts)


class ResponseCache:
    """Thread-safe key -> answer text store backed by sqlite (WAL, one commit per answer)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"cannot create the LLM cache directory {self.dir}: {e.strerror}",
                hint="set UNISEG_CACHE to a writable directory.",
            )
        self.path = self.dir / CACHE_FILE
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT, created TEXT)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise UsageError(
                f"the LLM cache {self.path} is unreadable: {e}",
                hint=f"delete {self.path} (it only holds cached answers) or point UNISEG_CACHE elsewhere.",
            )

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, text FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(dict(self._db.execute(q, chunk).fetchall()))
        return out

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, text: str, model: str | None = None) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("refusing to cache an empty answer")
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, text, model, created) VALUES (?, ?, ?, ?)",
                (key, text, model, now),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
