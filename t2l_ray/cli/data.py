"""`t2l-ray data ...`: look at a data source before training on it."""

from __future__ import annotations

import json
from typing import Optional

import typer

from t2l_ray.cli.core import fail, local
from t2l_ray.config import NAME_OR_PATH


def inspect(
    source: str = typer.Argument(..., help="A folder of SNI task files, or 'suite' for the generated demo suite.",
                                 callback=local(names=("suite",))),
    descriptions: Optional[str] = typer.Option(
        None, "--descriptions", help="Descriptions file (JSON/YAML/JSONL); default: SOURCE/descriptions.json if present.",
        callback=local(),
    ),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Tokenizer folder or hub name; default: a BPE trained on the source.",
        callback=local(NAME_OR_PATH),
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated suite (SOURCE = suite)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Per-task instances, descriptions and mean prompt/response tokens, totals, and skipped files with reasons."""
    from t2l_ray.data.descriptions import DescriptionsError
    from t2l_ray.data.inspect import inspect_source
    from t2l_ray.data.sni import NoUsableTasks
    from t2l_ray.data.tokenizer import TokenizerNotFound

    try:
        summary = inspect_source(source, descriptions, tokenizer, seed)
    except (NoUsableTasks, DescriptionsError, TokenizerNotFound, OSError) as error:
        fail(str(error))
    typer.echo(json.dumps(summary.to_dict()) if as_json else summary.table())
