"""`t2l-ray`: the one map of commands. `COMMANDS` names every command and the function that runs it;
`build_app` turns the map into the typer app. A new command is a function in a command module plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import typer

from t2l_ray.cli import core, data, factory, recipes, serve, train, train_lora
from t2l_ray.cli import eval as eval_cli


@dataclass(frozen=True)
class Group:
    """A command with subcommands (`t2l-ray data inspect`)."""

    help: str
    commands: dict[str, Callable]


COMMANDS: dict[str, Callable | Group] = {
    "train": train.train,
    "plot": train.plot,
    "train-lora": train_lora.train_lora,
    "eval": eval_cli.eval_command,
    "info": core.info,
    "init-checkpoint": core.init_checkpoint,
    "generate": core.generate,
    "validate-adapter": core.validate_adapter,
    "compare-adapters": core.compare_adapters,
    "data": Group("Inspect training data sources.", {"inspect": data.inspect}),
    "batch-generate": factory.batch_generate,
    "serve": serve.serve_command,
    "config": recipes.config_command,
}
HELP = "Text-to-LoRA adapter factory: task descriptions in, LoRA adapters out."


def build_app(
    commands: dict[str, Callable | Group] = COMMANDS, name: str = "t2l-ray", help_text: str = HELP
) -> typer.Typer:
    """The typer app of `commands`; a `Group` becomes a sub-app with its own commands."""
    app = typer.Typer(name=name, help=help_text, no_args_is_help=True, pretty_exceptions_enable=False)
    for command, target in commands.items():
        if isinstance(target, Group):
            app.add_typer(build_app(target.commands, command, target.help), name=command)
        else:
            app.command(command)(target)
    return app


app = build_app()
