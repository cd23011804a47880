import re
from dataclasses import dataclass, field

import pytest

from t2l_ray.config import ConfigError, describe, doc, load_config
from t2l_ray.train.config import BaselineRecipe, TrainConfig


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


def test_describe_gives_defaults_for_a_class_and_values_for_an_instance():
    defaults = {key: value for key, value, _ in describe(Outer)}
    assert defaults == {"steps": 3, "inner.lr": 0.1, "inner.names": ["a"], "inner.amounts": {}}
    values = {key: value for key, value, _ in describe(Outer(steps=5, inner=Inner(names=["x", "y"])))}
    assert values == {"steps": 5, "inner.lr": 0.1, "inner.names": ["x", "y"], "inner.amounts": {}}


@pytest.mark.parametrize("override,field", [
    ("baseline.max_steps=0", "baseline.max_steps must be at least 1"),
    ("baseline.batch_size=0", "baseline.batch_size must be at least 1"),
    ("baseline.tasks_per_job=0", "baseline.tasks_per_job must be at least 1"),
    ("baseline.log_every=0", "baseline.log_every must be at least 1"),
    ("baseline.warmup_steps=0", "baseline.warmup_steps must be at least 1"),
    ("baseline.multitask_steps=-5", "baseline.multitask_steps must be 0 or more"),
    ("baseline.max_examples_per_task=-1", "baseline.max_examples_per_task must be 0 or more"),
    ("baseline.lr=0", "baseline.lr must be > 0, not 0.0"),
    ("baseline.cpus_per_job=-1", "baseline.cpus_per_job must be > 0, not -1.0"),
    ("baseline.max_retries=-2", "baseline.max_retries must be -1 (no limit)"),
    ("deepspeed.zero_stage=4", "zero_stage must be 0-3"),  # the training checks still apply
])
def test_baseline_settings_no_run_can_use_are_refused_naming_the_field(override, field):
    config = load_config(BaselineRecipe, None, [override])
    with pytest.raises(ValueError, match=re.escape(field)):
        config.check()


def test_baseline_defaults_and_unlimited_retries_pass():
    load_config(BaselineRecipe, None, ["baseline.max_retries=-1", "baseline.multitask_steps=0"]).check()


@pytest.mark.parametrize("override,reason", [
    ("deepspeed.offload_optimizer=true", "offload_optimizer"),
    ("run.backend=nccl", "nccl needs GPU workers"),
    ("deepspeed.zero_stage=4", "zero_stage must be 0-3"),
])
def test_settings_cpu_workers_cannot_run_are_refused_with_the_reason(override, reason):
    config = load_config(TrainConfig, None, [override])
    with pytest.raises(ValueError, match=reason):
        config.check()


def test_a_recipe_without_warmup_is_refused_before_any_worker_starts():
    """DeepSpeed's WarmupDecayLR raises on 0 warmup steps, on every worker; the driver says so first."""
    with pytest.raises(ValueError, match=re.escape("optim.warmup_steps must be at least 1")):
        load_config(TrainConfig, None, ["optim.warmup_steps=0"]).check()


def test_the_cli_reports_a_refused_setting_without_starting_ray():
    from typer.testing import CliRunner

    from t2l_ray.cli import app

    from pathlib import Path

    recipe = str(Path(__file__).parent.parent / "jobs" / "demo_cpu.yaml")
    result = CliRunner().invoke(app, ["train", "--config", recipe, "--set", "deepspeed.offload_optimizer=true"])
    assert result.exit_code == 2 and "offload_optimizer" in result.output


def test_train_lora_refuses_a_bad_baseline_setting_before_starting_ray():
    from typer.testing import CliRunner

    from t2l_ray.cli import app

    result = CliRunner().invoke(app, ["train-lora", "--set", "baseline.batch_size=0"])
    assert result.exit_code == 2 and "baseline.batch_size must be at least 1, not 0" in result.output
