"""Relative paths: made absolute on the driver, once, before any Ray task, actor or train worker sees them."""

import json
import os
from pathlib import Path

import pytest
from console_check import framework_records
from typer.testing import CliRunner

from t2l_ray.cli import app
from t2l_ray.config import NAME_OR_PATH, PATH, load_config, local_path
from t2l_ray.eval.config import EvalConfig
from t2l_ray.train.baselines import BaselineRecipe
from t2l_ray.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("value", ["", "s3://bucket/runs/a", "gs://bucket/x", "file:///data/x",
                                   "lol:task190_snli,task1391_winogrande", "base-model:./encoder"])
def test_uris_and_specs_are_never_touched(cwd, value):
    assert local_path(value, PATH) == value and local_path(value, NAME_OR_PATH) == value


@pytest.mark.parametrize("value", ["mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b-instruct-v0.2", "all-minilm-l6-v2"])
def test_hub_names_and_presets_are_never_touched(cwd, value):
    assert local_path(value, NAME_OR_PATH) == value


def test_paths_are_made_absolute_from_the_current_folder(cwd):
    assert local_path("runs/demo") == str(cwd / "runs" / "demo")
    assert local_path("./tasks", NAME_OR_PATH) == str(cwd / "tasks")
    assert local_path("../elsewhere") == str(cwd.parent / "elsewhere")
    assert local_path("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert local_path("suite", PATH, names=("suite",)) == "suite" and local_path("suite") == str(cwd / "suite")
    assert local_path("my-tokenizer", NAME_OR_PATH) == "my-tokenizer"  # a hub name while no such folder exists
    (cwd / "my-tokenizer").mkdir()
    assert local_path("my-tokenizer", NAME_OR_PATH) == str(cwd / "my-tokenizer")
    assert local_path(str(cwd / "abs")) == str(cwd / "abs")


def test_recipes_resolve_every_path_field_when_loaded(cwd):
    recipe = cwd / "recipe.yaml"
    recipe.write_text("data: {source: tasks, descriptions: d/descriptions.json, task_list: lists/train.txt}\n"
                      "model: {name_or_path: mistralai/Mistral-7B-Instruct-v0.2, tokenizer: train}\n"
                      "reconstruction: {library: loras}\n")
    cfg = load_config(BaselineRecipe, str(recipe), ["run.output_dir=runs/x", "baseline.output_dir=base",
                                                    "encoder=base-model:./enc"])
    assert (cfg.data.source, cfg.data.descriptions, cfg.data.task_list) == (
        str(cwd / "tasks"), str(cwd / "d" / "descriptions.json"), str(cwd / "lists" / "train.txt"))
    assert (cfg.run.output_dir, cfg.baseline.output_dir, cfg.reconstruction.library) == (
        str(cwd / "runs" / "x"), str(cwd / "base"), str(cwd / "loras"))
    assert (cfg.model.name_or_path, cfg.model.tokenizer, cfg.encoder) == (
        "mistralai/Mistral-7B-Instruct-v0.2", "train", "base-model:./enc")
    assert load_config(TrainConfig, None, ["data.source=suite"]).data.source == "suite"
    assert load_config(TrainConfig, None, ["data.source=lol:task190_snli"]).data.source == "lol:task190_snli"

    evaluation = load_config(EvalConfig, None, [
        "adapters=[{name: t2l, path: out/adapters}, {name: remote, path: 's3://b/oracle'}]",
        "tasks.benchmark_files=bench", "run.output_dir=eval", "model.tokenizer=./run/tokenizer"])
    assert [s.path for s in evaluation.adapters] == [str(cwd / "out" / "adapters"), "s3://b/oracle"]
    assert (evaluation.tasks.sni, evaluation.tasks.benchmark_files, evaluation.run.output_dir) == (
        "suite", str(cwd / "bench"), str(cwd / "eval"))
    assert evaluation.model.tokenizer == str(cwd / "run" / "tokenizer")


def test_cli_path_options_are_made_absolute(cwd, minilm):
    made = runner.invoke(app, ["init-checkpoint", "--base-model", "gemma-2-2b-it", "--variant", "S", "--out", "ckpt"])
    assert made.exit_code == 0 and f"to {cwd / 'ckpt'} (sha256" in made.output, made.output
    one = runner.invoke(app, ["generate", "--checkpoint", "./ckpt", "--out", "adapters", "--id", "one",
                              "--description", "Answer trivia questions."])
    assert one.exit_code == 0 and str(cwd / "adapters" / "one") in one.output, one.output
    checked = runner.invoke(app, ["validate-adapter", "adapters/one"])
    assert checked.exit_code == 0 and f"valid: {cwd / 'adapters' / 'one'} " in checked.output, checked.output


@pytest.mark.slow
def test_training_and_the_factory_write_into_relative_folders_of_the_current_one(ray_cluster, cwd):
    """Ray Train runs the worker loop in its own working directory: a relative run folder must still mean
    this one, for rank 0's metrics, export and TensorBoard and for every rank's records."""
    trained = runner.invoke(app, [
        "train", "--config", str(ROOT / "jobs" / "demo_cpu.yaml"), "--output-dir", "runs/rel",
        "--set", "optim.max_steps=4", "--set", "run.log_every=2", "--set", "run.checkpoint_every=2"])
    assert trained.exit_code == 0, trained.output
    assert framework_records(trained.output) == [], trained.output  # they went to the run's log file
    run = cwd / "runs" / "rel"
    assert framework_records((run / "logs" / "t2l-ray.log").read_text())  # the workers' lines, for instance
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 4]
    assert (run / "hypernet" / "hypernet.json").is_file() and any((run / "tensorboard").iterdir())
    assert sorted(p.name for p in (run / "_workers").iterdir()) == ["rank0.pid", "rank1.pid"]
    assert list(run.glob("checkpoint_*")) and (run / "config.yaml").is_file()

    (cwd / "in.jsonl").write_text(json.dumps({"id": "digits", "description": "Extract every digit."}) + "\n")
    made = runner.invoke(app, ["batch-generate", "in.jsonl", "--checkpoint", "runs/rel/hypernet", "--out", "adapters"])
    assert made.exit_code == 0, made.output
    assert (cwd / "adapters" / "digits" / "adapter_config.json").is_file() and list((cwd / "adapters" / "_manifest").iterdir())
