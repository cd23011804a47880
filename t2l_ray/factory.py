"""The adapter factory: a JSONL file of descriptions in, one adapter folder per line out, on Ray Data.

The driver reads and checks every line (so line numbers are exact), resolves ids, and looks at what is
already in `out`; only adapters still to make enter the pipeline:
from_items -> encoder actors (the checkpoint's encoder) -> hypernet actors (one batched forward, then
`adapters.write_adapter` per adapter) -> result rows back on the driver, which appends them to the
run's manifest. The base model's weights are never loaded: shapes come from the checkpoint.

Reruns are cheap and safe: a complete folder made from the same description and checkpoint is
skipped, a half-written one (no `adapter_config.json`) is written again.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from t2l_ray import adapters, manifest, storage
from t2l_ray.checkpoint import load_checkpoint, read_checkpoint_config
from t2l_ray.config import doc
from t2l_ray.encoders import load_encoder
from t2l_ray.generator import render_embeddings
from t2l_ray.raycluster import ensure_ray, warn_unadvertised
from t2l_ray.request_rule import IdClaims, RuleError, check_request, resolve_id, weights_digest

LINE_KEYS = ("description", "id", "metadata")
_GLOB_CHARS = set("*?[")
_CHECK_THREADS = 16


@dataclass
class FactoryConfig:
    """Settings of one `batch-generate` run (YAML via --config, `--set key=value`, or the flags)."""

    batch_size: int = doc("Descriptions per encoder batch and per hypernet forward.", 32)
    concurrency: int = doc("Actors in each of the encoder and hypernet stages.", 1)
    num_cpus: float = doc("CPUs reserved per actor; fractions keep small clusters from starving Ray Data.", 0.5)
    num_gpus: float = doc("GPUs per encoder and per hypernet actor (0: CPU; fractions share a GPU).", 0.0)
    resources: dict[str, float] = doc(
        "Custom Ray resources per encoder and per hypernet actor, e.g. {gen_gpu: 0.5}: the actors run only on "
        "nodes that advertise them (the cluster configs' generation node type).", default_factory=dict)
    max_chars: int = doc("Longest description accepted, in characters; longer lines are bad lines.", 4000)
    dtype: Literal["bfloat16", "float32", "float16"] = doc("Dtype of the written LoRA weights.", "bfloat16")
    fail_fast: bool = doc("Stop at the first bad line: nothing after it is written.", False)

    def check(self) -> None:
        for name in ("batch_size", "concurrency", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0 (got {self.num_cpus}, {self.num_gpus})")
        bad = {k: v for k, v in self.resources.items() if v <= 0}
        if bad:
            raise ValueError(f"resources must map resource names to amounts > 0, not {bad}")


# ------------------------------------------------------------------------------------------------ input


@dataclass
class Request:
    """One good input line."""

    line: int
    source: str  # "file:line", for messages
    description: str
    given_id: str | None
    metadata: dict | None


def input_files(spec: str) -> list[str]:
    """A file, a folder (its `*.jsonl`), or a glob (local: any part; URIs: the last part) -> sorted URIs."""
    if _GLOB_CHARS & set(spec):
        if "://" not in spec:
            files = sorted(glob.glob(spec, recursive=True))
        else:
            parent, _, pattern = spec.rpartition("/")
            if _GLOB_CHARS & set(parent):
                raise ValueError(f"{spec}: in a URI only the last part may be a glob")
            files = [storage.join(parent, n) for n in fnmatch.filter(storage.list_dir(parent), pattern)]
        if not files:
            raise FileNotFoundError(f"no input file matches {spec}")
        return files
    if storage.is_dir(spec):
        files = [storage.join(spec, n) for n in storage.list_dir(spec) if n.endswith(".jsonl")]
        if not files:
            raise FileNotFoundError(f"{spec} is a folder with no .jsonl files")
        return files
    if not storage.exists(spec):
        raise FileNotFoundError(f"input {spec} does not exist")
    return [spec]


def read_lines(files: list[str]) -> Iterator[tuple[int, str, bytes]]:
    """(line number over all files, "file:line", raw bytes). Only `\\n` ends a line, as JSONL says."""
    number = 0
    for uri in files:
        raw = storage.read_bytes(uri).split(b"\n")
        if raw and raw[-1] == b"":
            raw.pop()
        for index, text in enumerate(raw, start=1):
            number += 1
            yield number, f"{uri}:{index}", text.rstrip(b"\r")


def parse_line(line: int, source: str, raw: bytes, max_chars: int) -> Request:
    """A good line as a Request; a bad one raises ValueError naming its file and line."""

    def bad(reason: str) -> ValueError:
        return ValueError(f"{source}: {reason}")

    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise bad(f"invalid JSON ({error})") from None
    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(LINE_KEYS))
    if unknown:
        raise bad(f"unknown key(s) {unknown}; a line may have {list(LINE_KEYS)}")
    description = obj.get("description")
    if description is None:
        raise bad("'description' is missing")
    if not isinstance(description, str):
        raise bad(f"'description' must be a string, got {type(description).__name__}")
    given_id = obj.get("id")
    problems = check_request(description, given_id, max_chars)
    if problems:
        raise bad(str(problems[0][1]))
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad(f"'metadata' must be a JSON object, got {type(metadata).__name__}")
    return Request(line, source, description, given_id, metadata)


# ------------------------------------------------------------------------------------------------ plan


@dataclass
class Plan:
    """What the driver decided before any adapter is made."""

    rows: list[dict] = field(default_factory=list)  # manifest rows known now: bad lines, skipped adapters
    todo: list[tuple[Request, str]] = field(default_factory=list)  # (request, adapter id) to generate
    followers: dict[int, list[Request]] = field(default_factory=dict)  # first line of an id -> its repeats
    lines: int = 0
    stopped_at: int | None = None  # fail-fast: the bad line the run stops at

    @property
    def total(self) -> int:
        """How many manifest rows the run will record."""
        return len(self.rows) + len(self.todo) + sum(len(repeats) for repeats in self.followers.values())


def _weights_digest(folder: str, known: dict[str, tuple[int, str]], adapter_id: str) -> tuple[int, str]:
    """(bytes, sha256) of a complete adapter's weights: from an earlier manifest row, else by reading them."""
    if adapter_id in known:
        return known[adapter_id]
    return weights_digest(storage.read_bytes(storage.join(folder, adapters.WEIGHTS_FILE)))


def existing_row(request: Request, adapter_id: str, folder: str, checkpoint_sha: str,
                 known: dict[str, tuple[int, str]]) -> dict | None:
    """The manifest row for an adapter already in `out` (skipped, or failed when it is another one); None to make it."""
    state = adapters.existing_adapter(folder, request.description, checkpoint_sha)
    if state is None:
        return None
    if state == adapters.SAME_ADAPTER:
        size, sha = _weights_digest(folder, known, adapter_id)
        return manifest.manifest_row(request.line, "skipped", id=adapter_id, uri=folder, bytes=size, sha256=sha)
    return manifest.manifest_row(request.line, "failed", id=adapter_id, uri=folder, error=f"{request.source}: {state}")


def _known_weights(out: str) -> dict[str, tuple[int, str]]:
    """Adapter id -> (bytes, sha256) from earlier runs' manifests."""
    return {
        row["id"]: (row["bytes"], row["sha256"])
        for row in manifest.read_rows(out)
        if row.get("status") in ("written", "skipped") and row.get("sha256")
    }


def plan_run(files: list[str], out: str, checkpoint_sha: str, config: FactoryConfig) -> Plan:
    """Check every line, give each an id, and sort them into bad, repeated, already made and to make."""
    plan = Plan()
    bad: dict[int, dict] = {}
    claims: IdClaims[Request] = IdClaims()  # adapter id -> the first line that asked for it
    primaries: list[tuple[Request, str]] = []
    for line, source, raw in read_lines(files):
        plan.lines = line
        if not raw.strip():
            continue  # blank lines are allowed and ignored
        try:
            request = parse_line(line, source, raw, config.max_chars)
        except ValueError as error:
            bad[line] = manifest.manifest_row(line, "failed", error=str(error))
            continue
        adapter_id = resolve_id(request.description, request.given_id, checkpoint_sha)
        try:
            first = claims.claim(adapter_id, request.description, f"line {line}", request)
        except RuleError as error:
            bad[line] = manifest.manifest_row(line, "failed", id=adapter_id, error=f"{source}: {error}")
            continue
        if first is request:
            primaries.append((request, adapter_id))
        else:
            plan.followers.setdefault(first.line, []).append(request)

    cut = min(bad) if config.fail_fast and bad else None
    if cut is not None:
        primaries = [(r, i) for r, i in primaries if r.line < cut]
    known = _known_weights(out)
    with ThreadPoolExecutor(_CHECK_THREADS) as pool:
        found = list(pool.map(
            lambda item: existing_row(item[0], item[1], storage.join(out, item[1]), checkpoint_sha, known), primaries
        ))
    on_disk = {request.line: row for (request, _), row in zip(primaries, found) if row is not None}
    if config.fail_fast:
        failures = [line for line, row in on_disk.items() if row["status"] == "failed"] + list(bad)
        cut = min(failures) if failures else None
    if cut is not None:
        plan.stopped_at = cut
        bad = {line: row for line, row in bad.items() if line <= cut}
        on_disk = {line: row for line, row in on_disk.items() if line <= cut}
        plan.followers = {
            line: [r for r in repeats if r.line < cut] for line, repeats in plan.followers.items() if line < cut
        }
    plan.todo = [(r, i) for r, i in primaries if r.line not in on_disk and (cut is None or r.line < cut)]
    plan.rows = sorted([*bad.values(), *on_disk.values()], key=lambda row: row["line"])
    return plan


def follower_row(primary: dict, request: Request) -> dict:
    """A repeated line (same id, same description) shares its first line's adapter."""
    if primary["status"] == "failed":
        return manifest.manifest_row(
            request.line, "failed", id=primary["id"], uri=primary["uri"],
            error=f"{request.source}: same adapter as line {primary['line']}, which failed",
        )
    return manifest.manifest_row(request.line, "skipped", id=primary["id"], uri=primary["uri"],
                                 bytes=primary["bytes"], sha256=primary["sha256"])


# ------------------------------------------------------------------------------------------------ actors


def _device(num_gpus: float) -> str:
    return "cuda" if num_gpus > 0 else "cpu"


class EmbedActor:
    """Holds the encoder the checkpoint was trained with; adds an `embedding` column."""

    def __init__(self, encoder: str, encoder_dim: int, num_gpus: float):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per actor start would break the driver's bar
        self.encoder = load_encoder(encoder, device=_device(num_gpus))
        if self.encoder.dim != encoder_dim:
            raise ValueError(
                f"encoder {encoder} gives {self.encoder.dim}-dim embeddings; the hypernet expects {encoder_dim}"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["embedding"] = self.encoder.encode([str(text) for text in batch["description"]]).numpy()
        return batch


class GenerateActor:
    """Holds the hypernet; one forward per batch, then writes each adapter folder through the storage layer."""

    def __init__(self, checkpoint: str, checkpoint_sha: str, dtype: str, num_gpus: float):
        self.checkpoint = load_checkpoint(checkpoint, device=_device(num_gpus))
        if self.checkpoint.sha256 != checkpoint_sha:
            raise ValueError(
                f"{checkpoint} changed while the factory ran (sha256 {self.checkpoint.sha256}, expected {checkpoint_sha})"
            )
        self.dtype = dtype

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        descriptions = [str(text) for text in batch["description"]]
        ids = [str(i) for i in batch["id"]]
        metadata = [{"metadata": json.loads(m)} if m else None for m in batch["metadata"]]
        rendered = render_embeddings(self.checkpoint, torch.from_numpy(np.array(batch["embedding"], np.float32)),
                                     descriptions, ids, dtype=self.dtype, extra_meta=metadata)
        rows = []
        for line, source, adapter_id, uri, files in zip(batch["line"], batch["source"], ids, batch["uri"], rendered):
            try:
                adapters.write_adapter(str(uri), files)
                status, error = "written", ""
            except Exception as exc:  # noqa: BLE001 - one failed write is a failed line, not a failed run
                status, error = "failed", f"{source}: writing {uri} failed: {type(exc).__name__}: {exc}"
            size, sha = weights_digest(files.files[adapters.WEIGHTS_FILE])
            rows.append({"line": int(line), "id": adapter_id, "status": status, "error": error, "uri": str(uri),
                         "bytes": size, "sha256": sha})
        # Strings and counts only (no None): every block then has the same column types.
        return {key: [row[key] for row in rows] for key in rows[0]}


# ------------------------------------------------------------------------------------------------ run


@dataclass
class FactorySummary:
    lines: int
    written: int = 0
    skipped: int = 0
    failed: int = 0
    written_bytes: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    manifest: list[str] = field(default_factory=list)
    stopped_at: int | None = None

    @property
    def adapters_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.written_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def count(self, row: dict) -> None:
        setattr(self, row["status"], getattr(self, row["status"]) + 1)
        if row["status"] == "written":
            self.written_bytes += row["bytes"]
        elif row["status"] == "failed":
            self.failures.append(row)


def _pipeline(todo: list[tuple[Request, str]], out: str, checkpoint: str, checkpoint_config: dict,
              config: FactoryConfig):
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws one bar for the whole run
    items = [
        {"line": r.line, "source": r.source, "id": i, "description": r.description,
         "metadata": json.dumps(r.metadata) if r.metadata is not None else "", "uri": storage.join(out, i)}
        for r, i in todo
    ]
    actor = {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus or None, "resources": config.resources or None,
             "batch_size": config.batch_size, "batch_format": "numpy",
             "compute": ray.data.ActorPoolStrategy(size=config.concurrency)}
    blocks = min(len(items), max(1, -(-len(items) // config.batch_size)))
    return (
        ray.data.from_items(items, override_num_blocks=blocks)
        .map_batches(EmbedActor, fn_constructor_kwargs={
            "encoder": checkpoint_config["encoder"], "encoder_dim": int(checkpoint_config["encoder_dim"]),
            "num_gpus": config.num_gpus}, **actor)
        .map_batches(GenerateActor, fn_constructor_kwargs={
            "checkpoint": checkpoint, "checkpoint_sha": checkpoint_config["weights_sha256"],
            "dtype": config.dtype, "num_gpus": config.num_gpus}, **actor)
    )


def run_factory(
    input_spec: str,
    checkpoint: str,
    out: str,
    config: FactoryConfig | None = None,
    on_row: Callable[[dict], None] | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> FactorySummary:
    """Make one adapter per good line of `input_spec` under `out`, recording every line in a new manifest file.

    `on_plan` sees the plan before any adapter is made, `on_row` every manifest row as it is recorded
    (the CLI draws its progress bar with them). Raises FileNotFoundError / ValueError for a missing
    input, a bad checkpoint or config; bad lines never raise.
    """
    config = config or FactoryConfig()
    config.check()
    checkpoint_config = read_checkpoint_config(checkpoint)
    files = input_files(input_spec)
    start = time.monotonic()
    plan = plan_run(files, out, checkpoint_config["weights_sha256"], config)
    if on_plan is not None:
        on_plan(plan)
    summary = FactorySummary(lines=plan.lines, stopped_at=plan.stopped_at)
    writer = manifest.ManifestWriter(out)

    def record(row: dict) -> None:
        writer.add(row)
        summary.count(row)
        if on_row is not None:
            on_row(row)

    def record_with_followers(row: dict) -> None:
        record(row)
        for request in plan.followers.pop(row["line"], []):
            record(follower_row(row, request))

    try:
        for row in plan.rows:
            record_with_followers(row)
        if plan.todo:
            ray_start = time.monotonic()
            ensure_ray()
            start += time.monotonic() - ray_start  # rates measure the factory, not the cluster's start-up
            warn_unadvertised(config.resources, "batch-generate", "resources")
            for result in _pipeline(plan.todo, out, checkpoint, checkpoint_config, config).iter_rows():
                failed = result["status"] == "failed"
                record_with_followers(manifest.manifest_row(
                    int(result["line"]), result["status"], id=result["id"], uri=result["uri"],
                    error=result["error"] or None,
                    bytes=None if failed else int(result["bytes"]), sha256=None if failed else result["sha256"],
                ))
                if failed and config.fail_fast:
                    summary.stopped_at = int(result["line"])
                    break
    finally:
        writer.flush()
        summary.seconds = time.monotonic() - start
        summary.manifest = list(writer.uris)
    return summary
