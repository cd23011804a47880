from dataclasses import dataclass, field

import pytest

from t2l_ray.config import ConfigError, describe, doc, load_config
from t2l_ray.train.config import TrainConfig


@dataclass
class Inner:
    lr: float = doc("learning rate", 0.1)
    names: list[str] = doc("names", default_factory=lambda: ["a"])
    amounts: dict[str, float] = doc("amounts", default_factory=dict)


@dataclass
class Outer:
    steps: int = doc("steps", 3)
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\ninner: {lr: 0.5}\n")
    config = load_config(Outer, path, ["inner.lr=3e-3", "inner.names=[x, y]"])
    assert config.steps == 5 and config.inner.lr == pytest.approx(0.003) and config.inner.names == ["x", "y"]


def test_unknown_keys_and_bad_types_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.inner: unknown key\(s\) \['lrr'\]"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="config.steps: expected int"):
        load_config(Outer, None, ["steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["steps"])


def test_mapping_values_are_checked_and_converted_like_fields():
    config = load_config(Outer, None, ["inner.amounts={gpu: 1, slot: 0.5}"])
    assert config.inner.amounts == {"gpu": 1.0, "slot": 0.5} and isinstance(config.inner.amounts["gpu"], float)
    for bad in ("yes", "true", "[1]"):
        with pytest.raises(ConfigError, match=r"config\.inner\.amounts\.gpu: expected float"):
            load_config(Outer, None, [f"inner.amounts.gpu={bad}"])


def test_every_recipe_in_jobs_loads():
    from pathlib import Path

    recipes = [p for p in Path(__file__).parent.parent.joinpath("jobs").glob("*.yaml")
               if p.read_text().lstrip().startswith("#") and "objective:" in p.read_text()]
    assert recipes, "no training recipes found"
    for recipe in recipes:
        load_config(TrainConfig, recipe).check()


def test_describe_lists_nested_fields_with_docs():
    rows = {key: text for key, _, text in describe(Outer)}
    assert rows["inner.lr"] == "learning rate" and "steps" in rows


@pytest.mark.parametrize("override,reason", [
    ("deepspeed.offload_optimizer=true", "offload_optimizer"),
    ("run.backend=nccl", "nccl needs GPU workers"),
    ("deepspeed.zero_stage=4", "zero_stage must be 0-3"),
])
def test_settings_cpu_workers_cannot_run_are_refused_with_the_reason(override, reason):
    config = load_config(TrainConfig, None, [override])
    with pytest.raises(ValueError, match=reason):
        config.check()


def test_the_cli_reports_a_refused_setting_without_starting_ray():
    from typer.testing import CliRunner

    from t2l_ray.cli import app

    from pathlib import Path

    recipe = str(Path(__file__).parent.parent / "jobs" / "demo_cpu.yaml")
    result = CliRunner().invoke(app, ["train", "--config", recipe, "--set", "deepspeed.offload_optimizer=true"])
    assert result.exit_code == 2 and "offload_optimizer" in result.output
