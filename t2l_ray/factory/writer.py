"""The host's half of generation: a batch of packed rows -> adapter folders, hashed and written on threads.

A weights file is the layout's header followed by one row of the batch buffer; it is hashed and written
from that slice, with no per-tensor copies and no joined bytes. hashlib, local writes and S3/GCS uploads
(pyarrow) release the GIL, so a thread pool spreads them over the node's CPUs and keeps several uploads in
flight. A failed write is a failed line, not a failed run.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from t2l_ray import adapters
from t2l_ray.packing import AdapterLayout


def default_threads() -> int:
    """Writer threads when not set: this node's CPUs + 4, at most 32 (writes mostly wait for fsync or uploads)."""
    return min(32, (os.cpu_count() or 1) + 4)


class AdapterWriter:
    """Writes the adapters of one checkpoint: `submit` rows as they come, then `results` for the batch."""

    def __init__(self, layout: AdapterLayout, *, config: bytes, checkpoint_sha256: str, encoder: str, scale: float,
                 dtype: str, threads: int = 0):
        self.layout, self.config = layout, config
        self.meta = {"checkpoint_sha256": checkpoint_sha256, "encoder": encoder, "scale": scale, "dtype": dtype}
        self.threads = threads or default_threads()
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="t2l-writer")

    def submit(self, rows: np.ndarray, batch: dict[str, np.ndarray], first: int) -> list[Future]:
        """Start writing `rows` (of `Renderer.chunks`), the adapters `first`, `first + 1`, ... of `batch`, whose
        columns are line, source, id, description, metadata (JSON or ""), uri (where to write) and shown (the
        uri as the user gave it, for messages). The rows must stay untouched until `results` returns."""
        return [self.pool.submit(self._write_one, row, batch, first + offset) for offset, row in enumerate(rows)]

    @staticmethod
    def results(futures: list[Future]) -> dict[str, list]:
        """Wait for every write; one result per adapter, in order, as columns."""
        done = [future.result() for future in futures]
        # Strings and counts only (no None): every Ray Data block then has the same column types.
        return {key: [result[key] for result in done] for key in ("line", "id", "status", "error", "bytes", "sha256")}

    def _write_one(self, row: np.ndarray, batch: dict[str, np.ndarray], index: int) -> dict:
        adapter_id, description = str(batch["id"][index]), str(batch["description"][index])
        metadata = str(batch["metadata"][index])
        digest = hashlib.sha256(self.layout.header)
        digest.update(row)
        files = {
            adapters.WEIGHTS_FILE: (self.layout.header, row),
            adapters.META_FILE: adapters.meta_bytes(
                adapter_id=adapter_id, description=description, **self.meta,
                extra_meta={"metadata": json.loads(metadata)} if metadata else None),
            adapters.CONFIG_FILE: self.config,
        }
        try:
            adapters.write_adapter(str(batch["uri"][index]), files)
            status, error = "written", ""
        except Exception as exc:  # noqa: BLE001 - one failed write is a failed line, not a failed run
            status = "failed"
            error = f"{batch['source'][index]}: writing {batch['shown'][index]} failed: {type(exc).__name__}: {exc}"
        return {"line": int(batch["line"][index]), "id": adapter_id, "status": status, "error": error,
                "bytes": self.layout.file_bytes, "sha256": digest.hexdigest()}
