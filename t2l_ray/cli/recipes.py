"""`t2l-ray config`: a command's settings, resolved from defaults, a recipe file and `--set`, with every field's doc.

The output is YAML with each field's doc as a comment above it, so it also serves as a starting recipe.
"""

from __future__ import annotations

import importlib
import textwrap
from typing import Any, List, Optional

import typer

from t2l_ray.cli.core import fail, load_checked

WIDTH = 110
# The command whose settings to show -> (module, class): the config class that command reads `--config` with.
RECIPES = {
    "train": ("t2l_ray.train.config", "TrainConfig"),
    "train-lora": ("t2l_ray.train.config", "BaselineRecipe"),
    "eval": ("t2l_ray.eval.config", "EvalConfig"),
    "batch-generate": ("t2l_ray.factory", "FactoryConfig"),
    "serve": ("t2l_ray.serve.config", "ServeConfig"),
}


def config_class(command: str) -> type:
    if command not in RECIPES:
        fail(f"no settings for {command!r}; give one of {', '.join(RECIPES)}")
    module, name = RECIPES[command]
    return getattr(importlib.import_module(module), name)


def _yaml_value(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return text.removesuffix("...\n").strip()


def render(config: Any, defaults: type) -> str:
    """`config` as nested YAML; above each field its doc, and its default when the value differs from it."""
    from t2l_ray.config import describe

    default_of = {key: value for key, value, _ in describe(defaults)}
    lines: list[str] = []
    open_sections: list[str] = []
    for key, value, text in describe(config):
        *sections, name = key.split(".")
        common = 0
        while common < min(len(sections), len(open_sections)) and sections[common] == open_sections[common]:
            common += 1
        for depth in range(common, len(sections)):
            lines.append("  " * depth + f"{sections[depth]}:")
        open_sections = sections
        indent = "  " * len(sections)
        note = text if value == default_of.get(key) else f"{text} (default: {_yaml_value(default_of.get(key))})"
        if note:
            lines += textwrap.wrap(note, WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}#   ")
        lines.append(f"{indent}{name}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def config_command(
    command: str = typer.Argument(..., metavar="COMMAND", help=f"Whose settings: {', '.join(RECIPES)}."),
    recipe: Optional[str] = typer.Argument(None, metavar="[RECIPE]", help="YAML file COMMAND would read with --config."),
    overrides: List[str] = typer.Option([], "--set", help="Override a field, as COMMAND takes it: --set optim.lr=1e-4."),
):
    """Print COMMAND's settings, resolved from defaults, RECIPE and --set, with every field's doc.

    The config class is the one COMMAND reads its --config file with: train -> TrainConfig, train-lora ->
    BaselineRecipe, eval -> EvalConfig, batch-generate -> FactoryConfig, serve -> ServeConfig. The same checks
    as COMMAND's apply (exit 2 with the reason). Example: t2l-ray config train jobs/demo_cpu.yaml --set optim.lr=1e-3
    """
    cls = config_class(command)
    resolved = load_checked(cls, recipe, overrides)
    source = f" from {recipe}" if recipe else " (defaults)"
    with_set = f", --set {' '.join(overrides)}" if overrides else ""
    typer.echo(f"# t2l-ray {command} settings ({cls.__name__}){source}{with_set}")
    typer.echo(render(resolved, cls), nl=False)
