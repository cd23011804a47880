"""The root typer app; command modules register themselves on it."""

import typer

app = typer.Typer(
    name="t2l-ray",
    help="Text-to-LoRA adapter factory: task descriptions in, LoRA adapters out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
