"""Lots-of-LoRAs style datasets (`Lots-of-LoRAs/<task>` on the Hugging Face hub, or local exports).

Each row is an SNI instance already rendered into a prompt: `input` holds
"Definition: ... Positive Example 1 - ... Now complete the following example -\\nInput: ...\\nOutput: ",
`output` is the list of acceptable answers, `id` the SNI instance id; the splits are train / valid / test.
We turn rows back into the same `SNITask` objects as `sni.py`, so prompts, tokens and the Ray Data pipeline
are shared: the definition is the text after "Definition:" up to the examples, and the instance input is
the text after the last "Input:" of the final example, without its trailing "Output:".

Sources: a hub dataset name (needs a reachable hub), or a local `.parquet`, `.jsonl` or `.json` export of
the same columns. A row that cannot be parsed is reported with its file and row number.
"""

from __future__ import annotations

import re
from pathlib import Path

from t2l_ray.data.sni import Instance, MalformedTask, SNITask

_DEFINITION = re.compile(r"Definition:\s*(.*?)(?:\n\s*\n\s*(?:Positive Example|Negative Example|Now complete)|$)", re.S)
_FINAL = "Now complete the following example -"
_INPUT = re.compile(r"Input:\s*(.*?)\s*(?:\n\s*Output:\s*)?$", re.S)


def parse_row(row: dict, where: str) -> tuple[str, Instance]:
    """(definition, instance) of one rendered row; `where` names the row in errors."""
    text, outputs, row_id = row.get("input"), row.get("output"), row.get("id")
    if not isinstance(text, str) or not text.strip():
        raise MalformedTask(f"{where}: 'input' must be a non-empty string")
    if isinstance(outputs, str):
        outputs = [outputs]
    outputs = list(outputs) if outputs is not None and not isinstance(outputs, (dict, bytes)) else None
    if not outputs or not all(isinstance(o, str) and o.strip() for o in outputs):
        raise MalformedTask(f"{where}: 'output' must be a non-empty list of non-empty strings")
    definition = _DEFINITION.search(text)
    if definition is None or not definition.group(1).strip():
        raise MalformedTask(f"{where}: no 'Definition:' paragraph in the input")
    final = text.rsplit(_FINAL, 1)[-1] if _FINAL in text else text
    problem = _INPUT.search(final)
    if problem is None:
        raise MalformedTask(f"{where}: no 'Input:' in the final example")
    return definition.group(1).strip(), Instance(str(row_id or where), problem.group(1), [str(o) for o in outputs])


def _rows(source: str, split: str) -> tuple[list[dict], str]:
    path = Path(source)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist(), str(path)
    if path.suffix in (".jsonl", ".json"):
        from datasets import load_dataset

        return list(load_dataset("json", data_files=str(path), split="train")), str(path)
    from datasets import load_dataset

    try:
        return list(load_dataset(source, split=split)), f"{source}[{split}]"
    except Exception as error:  # noqa: BLE001 - hub/network failures become one clear message
        raise ValueError(
            f"cannot load Lots-of-LoRAs dataset {source!r} split {split!r} ({type(error).__name__}: {error}); "
            "offline, pass a local .parquet or .jsonl export with columns input, output, id"
        ) from None


def load_lol_task(source: str, name: str | None = None, split: str = "train") -> SNITask:
    """One task from a hub name or a local export; the task name defaults to the dataset's last path part."""
    rows, where = _rows(source, split)
    if not rows:
        raise MalformedTask(f"{where}: no rows")
    definitions, instances = set(), []
    for number, row in enumerate(rows, 1):
        definition, instance = parse_row(row, f"{where} row {number}")
        definitions.add(definition)
        instances.append(instance)
    if len(definitions) != 1:
        raise MalformedTask(f"{where}: rows disagree on the task definition ({len(definitions)} variants)")
    name = name or Path(source.rstrip("/")).stem.split("/")[-1]
    return SNITask(name=name, definition=definitions.pop(), instances=instances, categories=[], source_file=where)


def write_as_sni(tasks: list[SNITask], folder: str | Path) -> Path:
    """Write tasks as SNI-schema files, so Lots-of-LoRAs sources go through the same training pipeline."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        record = {"Definition": [task.definition], "Categories": task.categories, "Source": [task.source_file],
                  "Instances": [{"id": i.id, "input": i.input, "output": i.outputs} for i in task.instances]}
        (folder / f"{task.name}.json").write_text(json.dumps(record, indent=4, ensure_ascii=False))
    return folder


LOL_PREFIX = "lol:"
"""`data.source: lol:NAME_OR_FILE[,NAME_OR_FILE...]` trains on Lots-of-LoRAs datasets (train split)."""


def materialise_lol_source(source: str, folder: str | Path) -> Path:
    names = [part.strip() for part in source[len(LOL_PREFIX):].split(",") if part.strip()]
    if not names:
        raise ValueError(f"data.source {source!r} names no Lots-of-LoRAs dataset")
    return write_as_sni([load_lol_task(name) for name in names], folder)
