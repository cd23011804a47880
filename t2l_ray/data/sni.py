"""Super-NaturalInstructions (SNI) task files, read in their original schema.

A source is a folder of `taskNNN_*.json` files (SNI's `tasks/`) or an explicit list of files. A task's name
is its file name without `.json`. Files are parsed with Python's `json` because real SNI files contain bare
`NaN` (e.g. `"URL": [NaN]`), which strict JSON parsers reject.

Choices:
- `Definition` is a list in SNI (task288 has two). The strings are stripped and joined with a single space,
  so the definition stays one paragraph in front of the prompt's blank line.
- A malformed file is skipped whole and reported as `Skipped(file, reason)`. One broken instance skips its
  file too (the reason names the instance id): a broken file means a broken export, and silently training
  on the rest of it would hide that.
- Instance inputs and outputs are kept verbatim (leading spaces, newlines, non-ASCII); prompt formatting
  is `prompts.py`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TASK_GLOB = "task*.json"

TaskNames = str | Path | Iterable[str]
"""A task-list file (one name a line, `#` comments and blank lines ignored) or the names themselves."""


@dataclass(frozen=True)
class Instance:
    id: str
    input: str
    outputs: list[str]
    """SNI's `output`: every acceptable answer, in file order."""


@dataclass(frozen=True)
class SNITask:
    name: str
    definition: str
    instances: list[Instance]
    categories: list[str]
    source_file: str


@dataclass(frozen=True)
class Skipped:
    file: str
    reason: str


class MalformedTask(ValueError):
    """A task file that does not follow the SNI schema; the message is the reason."""


class NoUsableTasks(ValueError):
    """Nothing could be loaded; the message lists why each candidate was skipped."""


def read_task_names(names: TaskNames) -> list[str]:
    """Task names from a task-list file or an iterable; a trailing `.json` is dropped so both forms work."""
    if isinstance(names, (str, Path)):
        lines = Path(names).read_text(encoding="utf-8").splitlines()
        names = (line.split("#", 1)[0].strip() for line in lines)
    return [name.strip().removesuffix(".json") for name in names if name.strip()]


def parse_task(raw: str | bytes, source_file: str) -> SNITask:
    """One SNI task from the text of its file; raises `MalformedTask` saying what is wrong."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedTask(f"invalid JSON: {error}") from None
    if not isinstance(data, dict):
        raise MalformedTask(f"expected a JSON object at the top, got {type(data).__name__}")
    return SNITask(
        name=Path(source_file).name.removesuffix(".json"),
        definition=_definition(data),
        instances=_instances(data),
        categories=_string_list(data.get("Categories", []), "Categories"),
        source_file=str(source_file),
    )


def read_task(path: str | Path) -> SNITask:
    """One SNI task file from disk; raises `MalformedTask`."""
    return parse_task(Path(path).read_bytes(), str(path))


def load_sni(
    source: str | Path | Iterable[str | Path],
    task_list: TaskNames | None = None,
    exclude: TaskNames | None = None,
) -> tuple[list[SNITask], list[Skipped]]:
    """Load the selected tasks of a folder or file list; returns (tasks in name order, skipped files).

    `task_list` keeps only the named tasks (a listed task with no file is reported as skipped);
    `exclude` drops tasks after that. Raises `NoUsableTasks` when no task survives.
    """
    files, skipped = _task_files(source)
    if task_list is not None:
        wanted = read_task_names(task_list)
        for name in wanted:
            if name not in files:
                skipped.append(Skipped(_expected_file(source, name), f"task {name} is in the task list but has no file"))
        files = {name: files[name] for name in wanted if name in files}
    if exclude is not None:
        excluded = set(read_task_names(exclude))
        files = {name: path for name, path in files.items() if name not in excluded}
    tasks = []
    for name in sorted(files):
        try:
            tasks.append(read_task(files[name]))
        except MalformedTask as error:
            skipped.append(Skipped(str(files[name]), str(error)))
        except OSError as error:
            skipped.append(Skipped(str(files[name]), f"cannot read: {error}"))
    if not tasks:
        reasons = "\n".join(f"  {s.file}: {s.reason}" for s in skipped) or "  (no task files were selected)"
        raise NoUsableTasks(f"no usable SNI tasks in {_describe(source)}; skipped:\n{reasons}")
    return tasks, skipped


def instance_rows(tasks: Iterable[SNITask]) -> list[dict]:
    """One row per instance, the columns `prompts.tokenize_batch` reads: task, id, definition, input, outputs."""
    return [
        {"task": task.name, "id": inst.id, "definition": task.definition, "input": inst.input, "outputs": list(inst.outputs)}
        for task in tasks
        for inst in task.instances
    ]


def _task_files(source: str | Path | Iterable[str | Path]) -> tuple[dict[str, Path], list[Skipped]]:
    """Task name -> file; a second file with an already-seen name is skipped, not silently preferred."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise NoUsableTasks(f"SNI source {folder} is not a folder")
        paths = sorted(folder.glob(TASK_GLOB))
        if not paths:
            raise NoUsableTasks(f"no {TASK_GLOB} files in {folder}")
    else:
        paths = [Path(p) for p in source]
    files: dict[str, Path] = {}
    skipped = []
    for path in paths:
        name = path.name.removesuffix(".json")
        if name in files:
            skipped.append(Skipped(str(path), f"duplicate task name {name} (already read from {files[name]})"))
        else:
            files[name] = path
    return files, skipped


def _expected_file(source: str | Path | Iterable[str | Path], name: str) -> str:
    return str(Path(source) / f"{name}.json") if isinstance(source, (str, Path)) else f"{name}.json"


def _describe(source: str | Path | Iterable[str | Path]) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the given files"


def _definition(data: dict) -> str:
    if "Definition" not in data:
        raise MalformedTask("missing Definition")
    parts = _string_list(data["Definition"], "Definition")
    definition = " ".join(part.strip() for part in parts if part.strip())
    if not definition:
        raise MalformedTask("Definition is empty")
    return definition


def _instances(data: dict) -> list[Instance]:
    if "Instances" not in data:
        raise MalformedTask("missing Instances")
    raw = data["Instances"]
    if not isinstance(raw, list) or not raw:
        raise MalformedTask("Instances must be a non-empty list")
    instances, seen = [], set()
    for index, item in enumerate(raw):
        instance = _instance(item, index)
        if instance.id in seen:
            raise MalformedTask(f"instance {instance.id}: duplicate id")
        seen.add(instance.id)
        instances.append(instance)
    return instances


def _instance(item: object, index: int) -> Instance:
    if not isinstance(item, dict):
        raise MalformedTask(f"instance #{index}: not an object")
    instance_id = item.get("id")
    if not isinstance(instance_id, str) or not instance_id:
        raise MalformedTask(f"instance #{index}: missing or non-string id")
    if not isinstance(item.get("input"), str):
        raise MalformedTask(f"instance {instance_id}: input is missing or not a string")
    outputs = item.get("output")
    if not isinstance(outputs, list) or not outputs:
        raise MalformedTask(f"instance {instance_id}: output must be a non-empty list of strings")
    if not all(isinstance(o, str) for o in outputs):
        raise MalformedTask(f"instance {instance_id}: output has a non-string answer")
    return Instance(id=instance_id, input=item["input"], outputs=list(outputs))


def _string_list(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedTask(f"{key} must be a list of strings")
    return list(value)
