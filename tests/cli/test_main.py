"""The command map (`t2l_ray.cli.main.COMMANDS`) and `t2l-ray config`, run the way a user runs them."""

import inspect
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from t2l_ray.cli import app
from t2l_ray.cli.main import COMMANDS, Group
from t2l_ray.cli.recipes import RECIPES, config_class
from t2l_ray.config import describe, load_config, resolve_paths

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def words(text: str) -> list[str]:
    """The words of a help screen, without the boxes and line breaks rich draws."""
    return re.findall(r"[\w'.,()=-]+", text)


def contains_words(text: str, phrase: str) -> bool:
    have, want = " ".join(words(text)), " ".join(words(phrase))
    return want in have


def every_command() -> list[tuple[list[str], object]]:
    found = []
    for name, target in COMMANDS.items():
        if isinstance(target, Group):
            found += [([name, sub], function) for sub, function in target.commands.items()]
        else:
            found.append(([name], target))
    return found


@pytest.mark.parametrize("path,function", every_command(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_command_in_the_map_is_reachable_and_has_help(path, function):
    summary = inspect.getdoc(function).splitlines()[0]
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert contains_words(result.output, summary), (summary, result.output)


def test_the_top_level_help_lists_every_command_and_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = set(words(result.output))
    assert set(COMMANDS) <= listed
    for name, target in COMMANDS.items():
        if isinstance(target, Group):
            assert contains_words(result.output, target.help)
            assert set(target.commands) <= set(words(runner.invoke(app, [name, "--help"]).output))


def test_config_prints_the_resolved_recipe_with_docs_and_it_loads_back(tmp_path):
    recipe, overrides = str(ROOT / "jobs" / "demo_cpu.yaml"), ["optim.lr=1e-3", "run.num_workers=1"]
    result = runner.invoke(app, ["config", "train", recipe, *[arg for o in overrides for arg in ("--set", o)]])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# t2l-ray train settings (TrainConfig) from {recipe}, --set optim.lr=1e-3")
    cls = config_class("train")
    for key, _, text in describe(cls):  # every field's doc is shown, in wrapped lines above it
        assert contains_words(result.output, text), key
    assert contains_words(result.output, "lr: 0.001")
    assert contains_words(result.output, "(default: 2.5e-05)")
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.output)
    assert load_config(cls, shown) == load_config(cls, recipe, overrides)


@pytest.mark.parametrize("command", list(RECIPES))
def test_config_without_a_recipe_shows_the_defaults(command, tmp_path):
    result = runner.invoke(app, ["config", command])
    assert result.exit_code == 0, result.output
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.output)
    cls = config_class(command)
    assert load_config(cls, shown) == resolve_paths(cls())  # relative default folders shown absolute, as used
    assert COMMANDS.get(command) is not None  # every recipe kind is a command of the map


@pytest.mark.parametrize("args,phrase", [
    (["config", "nope"], "no settings for 'nope'; give one of train, train-lora, eval, batch-generate, serve"),
    (["config", "train", "--set", "optim.bogus=1"], "unknown key(s) ['bogus']"),
    (["config", "serve", "--set", "max_batch_size=999"], "max_ongoing_requests (64) must be >= max_batch_size"),
    (["config", "eval", "missing.yaml"], "config file missing.yaml does not exist"),
])
def test_config_refuses_what_the_command_would_refuse(args, phrase):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and phrase in result.output, result.output
