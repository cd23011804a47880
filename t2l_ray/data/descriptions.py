"""Task descriptions: the texts the hypernet's encoder reads, kept apart from the held-out ones.

Accepted files (the format is chosen by extension):
- `.json` in the shared `descriptions.json` layout: `{"_source": {...}, "tasks": {task: {"descriptions":
  [...], "eval_descriptions": [...], ...}}}`. Other per-task keys (T2L ids, roles) are ignored.
- `.json` / `.yaml` / `.yml` plain mapping `{task: [description, ...]}`; an entry may also be the
  `{"descriptions": [...], "eval_descriptions": [...]}` object above. Top-level keys starting with `_` are
  metadata and skipped.
- `.jsonl`: one object a line, `{"task": ..., "description": "..."}` or `{"task": ..., "descriptions": [...]}`,
  optionally with `"eval_descriptions": [...]`; lines for the same task add up. Blank lines are ignored.

Held-out (`eval_descriptions`) texts are never mixed into the training ones: evaluating a hypernet on a
description it trained on would overstate how well it generalises.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from t2l_ray.data.sni import SNITask


class DescriptionsError(ValueError):
    """A descriptions file that cannot be read; the message names the file (and line for JSONL)."""


@dataclass
class TaskDescriptions:
    train: dict[str, list[str]] = field(default_factory=dict)
    """Task -> descriptions used in training."""
    held_out: dict[str, list[str]] = field(default_factory=dict)
    """Task -> held-out descriptions, for evaluation only."""


def load_descriptions(path: str | Path) -> TaskDescriptions:
    """Read a descriptions file in any of the formats in the module docstring."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _from_jsonl(path)
    if suffix not in (".json", ".yaml", ".yml"):
        raise DescriptionsError(f"{path}: unknown descriptions format (use .json, .yaml, .yml or .jsonl)")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if suffix in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise DescriptionsError(f"{path}: cannot parse: {error}") from None
    if not isinstance(data, dict):
        raise DescriptionsError(f"{path}: expected a mapping of task -> descriptions")
    entries = data["tasks"] if isinstance(data.get("tasks"), dict) else data
    loaded = TaskDescriptions()
    for key, entry in entries.items():
        task = str(key)
        if task.startswith("_"):
            continue
        where = f"{path}: task {task}"
        if isinstance(entry, list):
            _add(loaded.train, task, entry, where)
        elif isinstance(entry, dict) and "descriptions" in entry:
            _add(loaded.train, task, entry["descriptions"], where)
            _add(loaded.held_out, task, entry.get("eval_descriptions") or [], f"{where} (eval_descriptions)")
        else:
            raise DescriptionsError(f"{where}: expected a list of descriptions or an object with 'descriptions'")
    return loaded


def descriptions_for(
    tasks: Iterable[SNITask], descriptions: TaskDescriptions | None, held_out: bool = False
) -> dict[str, list[str]]:
    """Task -> the descriptions to use; a task with none (of the asked kind) falls back to its SNI Definition.

    The fallback keeps every task usable: T2L can condition on the definition itself when no generated
    descriptions exist for a task.
    """
    chosen: Mapping[str, list[str]] = {}
    if descriptions is not None:
        chosen = descriptions.held_out if held_out else descriptions.train
    return {task.name: list(chosen.get(task.name) or [task.definition]) for task in tasks}


def _from_jsonl(path: Path) -> TaskDescriptions:
    loaded = TaskDescriptions()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DescriptionsError(f"{where}: invalid JSON: {error}") from None
            if not isinstance(record, dict) or not isinstance(record.get("task"), str) or not record["task"]:
                raise DescriptionsError(f"{where}: expected an object with a string 'task'")
            if "description" in record:
                texts = [record["description"]]
            elif "descriptions" in record:
                texts = record["descriptions"]
            else:
                raise DescriptionsError(f"{where}: needs 'description' or 'descriptions'")
            _add(loaded.train, record["task"], texts, where)
            _add(loaded.held_out, record["task"], record.get("eval_descriptions") or [], where)
    return loaded


def _add(target: dict[str, list[str]], task: str, texts: object, where: str) -> None:
    if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
        raise DescriptionsError(f"{where}: descriptions must be a list of non-empty strings")
    if texts:
        target.setdefault(task, []).extend(texts)
