"""What a run will do, decided on the driver before any adapter is made.

Every line is read and checked here (so line numbers are exact), given its id, and sorted into bad lines,
repeats of an earlier line, adapters already complete in `out` (skipped; or failed when the folder holds
another adapter) and adapters to make. An input with no description at all is an error, not a run.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from t2l_ray import adapters, manifest, storage
from t2l_ray.factory.config import FactoryConfig
from t2l_ray.request_rule import IdClaims, RuleError, check_request, resolve_id, weights_digest

LINE_KEYS = ("description", "id", "metadata")
_GLOB_CHARS = set("*?[")
_CHECK_THREADS = 16


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
    described = False
    for line, source, raw in read_lines(files):
        plan.lines = line
        if not raw.strip():
            continue  # blank lines are allowed and ignored
        described = True
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

    if not described:
        where = files[0] if len(files) == 1 else f"the {len(files)} input files ({', '.join(files)})"
        raise ValueError(f"{where}: no descriptions (the input is empty or has only blank lines)")
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
