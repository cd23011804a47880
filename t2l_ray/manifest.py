"""The factory's manifest: JSONL files under `{out}/_manifest/`, one row per input line, newest row wins.

Each run writes its own files, `run-<UTC time>-<random>-<part>.jsonl`, so names sort oldest first and
reruns only ever add rows. Object stores cannot append, so a flush rewrites the run's current file
whole (one atomic put, also locally); after `ROWS_PER_FILE` rows the run moves on to a new part, which
bounds what a flush rewrites. A killed run loses at most the rows since its last flush.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

from t2l_ray import storage

MANIFEST_DIR = "_manifest"
STATUSES = ("written", "skipped", "failed")
ROWS_PER_FILE = 10_000
FLUSH_EVERY_S = 2.0


def manifest_row(line: int, status: str, *, id: str | None = None, error: str | None = None,
                 uri: str | None = None, bytes: int | None = None, sha256: str | None = None) -> dict:
    """One row; `bytes` and `sha256` describe the adapter's weights file."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    return {"line": line, "id": id, "status": status, "error": error, "uri": uri, "bytes": bytes, "sha256": sha256}


class ManifestWriter:
    """The rows of one run, flushed at most every `flush_every` seconds and on `flush()`."""

    def __init__(self, out: str, flush_every: float = FLUSH_EVERY_S):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.prefix = storage.join(out, MANIFEST_DIR, f"run-{stamp}-{uuid.uuid4().hex[:8]}")
        self.flush_every = flush_every
        self.part = 0
        self.rows: list[dict] = []
        self.uris: list[str] = []
        self._dirty = False
        self._last_flush = time.monotonic()

    def _uri(self) -> str:
        return f"{self.prefix}-{self.part:04d}.jsonl"

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._dirty = True
        if len(self.rows) >= ROWS_PER_FILE:
            self.flush()
            self.part, self.rows = self.part + 1, []
        elif time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        uri = self._uri()
        storage.write_text(uri, "".join(json.dumps(row) + "\n" for row in self.rows))
        if uri not in self.uris:
            self.uris.append(uri)
        self._dirty = False
        self._last_flush = time.monotonic()


def manifest_files(out: str) -> list[str]:
    """Every run's manifest files under `out`, oldest first (hidden temp files of a killed write are not)."""
    folder = storage.join(out, MANIFEST_DIR)
    names = [n for n in storage.list_dir(folder) if n.startswith("run-") and n.endswith(".jsonl")]
    return [storage.join(folder, n) for n in names]


def read_rows(out: str) -> list[dict]:
    """All rows of all runs, oldest first."""
    rows = []
    for uri in manifest_files(out):
        for number, text in enumerate(storage.read_text(uri).splitlines(), start=1):
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError as error:
                raise ValueError(f"{uri}:{number}: not a manifest row ({error})") from None
    return rows


def latest_by_line(out: str) -> dict[int, dict]:
    """The newest row for each input line number."""
    return {row["line"]: row for row in read_rows(out)}
