"""`t2l-ray data inspect` on the shared SNI slice, the generated suite, and folders with bad files."""

import json
import shutil

import pytest
from sni_paths import sni_descriptions_file, sni_dir
from typer.testing import CliRunner

from t2l_ray.cli import app
from t2l_ray.data.prompts import tokenize_batch
from t2l_ray.data.sni import instance_rows
from t2l_ray.data.suite import build_suite, write_suite
from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer

runner = CliRunner()


def inspect(*args):
    return runner.invoke(app, ["data", "inspect", *map(str, args)])


def inspect_json(*args):
    result = inspect(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_shared_sni_folder_counts_every_file():
    folder = sni_dir()
    summary = inspect_json(folder, "--descriptions", sni_descriptions_file())
    files = sorted(folder.glob("task*.json"))
    assert len(files) == 24
    by_name = {task["name"]: task for task in summary["tasks"]}
    assert sorted(by_name) == [f.stem for f in files]
    for path in files:
        task = by_name[path.stem]
        assert task["instances"] == len(json.loads(path.read_text(encoding="utf-8"))["Instances"])
        assert task["descriptions"] == 200
        assert task["mean_prompt_tokens"] > task["mean_response_tokens"] >= 2  # at least one token and EOS
    assert summary["total_instances"] == sum(t["instances"] for t in summary["tasks"])
    assert summary["total_tokens"] == sum(t["prompt_tokens"] + t["response_tokens"] for t in summary["tasks"])
    assert summary["skipped"] == []


def test_table_lists_tasks_and_totals():
    result = inspect(sni_dir())
    assert result.exit_code == 0, result.output
    instances = sum(len(json.loads(f.read_text(encoding="utf-8"))["Instances"]) for f in sni_dir().glob("task*.json"))
    assert "task1146_country_capital" in result.stdout
    assert f"24 tasks, {instances:,} instances" in result.stdout
    assert "descriptions_file: " + str(sni_descriptions_file()) in result.stdout  # picked up from the folder


def test_suite_with_a_given_tokenizer_counts_its_tokens(tmp_path):
    suite = build_suite(seed=3)
    rows = instance_rows(suite.tasks)
    train_tokenizer([r["input"] for r in rows], tmp_path / "tok", vocab_size=512)
    summary = inspect_json("suite", "--seed", 3, "--tokenizer", tmp_path / "tok")
    assert len(summary["tasks"]) == len(suite.tasks) == 36
    assert summary["total_instances"] == 36 * 40
    assert {t["descriptions"] for t in summary["tasks"]} == {5}
    first = suite.tasks[0]
    batch = {c: [r[c] for r in instance_rows([first])] for c in ("definition", "input", "outputs")}
    tokens = tokenize_batch(batch, load_tokenizer(tmp_path / "tok"), 10**9, 10**9)
    reported = summary["tasks"][0]
    assert reported["name"] == first.name
    assert reported["prompt_tokens"] == tokens["prompt_tokens"].sum()
    assert reported["mean_response_tokens"] == pytest.approx(tokens["response_tokens"].mean(), abs=0.01)


def test_written_suite_folder_picks_up_its_descriptions(tmp_path):
    write_suite(tmp_path / "suite", seed=1, instances_per_task=5)
    summary = inspect_json(tmp_path / "suite")
    assert {t["descriptions"] for t in summary["tasks"]} == {5}
    assert summary["descriptions_file"] == str(tmp_path / "suite" / "descriptions.json")
    (tmp_path / "suite" / "descriptions.json").unlink()
    assert {t["descriptions"] for t in inspect_json(tmp_path / "suite")["tasks"]} == {1}  # the Definition


def test_bad_file_is_skipped_with_its_reason(tmp_path):
    for name in ("task1146_country_capital.json", "task1508_wordnet_antonyms.json"):
        shutil.copy(sni_dir() / name, tmp_path / name)
    (tmp_path / "task9999_broken.json").write_text('{"Definition": ["x"], "Instances": [', encoding="utf-8")
    summary = inspect_json(tmp_path)
    assert [t["name"] for t in summary["tasks"]] == ["task1146_country_capital", "task1508_wordnet_antonyms"]
    assert [s["file"] for s in summary["skipped"]] == [str(tmp_path / "task9999_broken.json")]
    assert summary["skipped"][0]["reason"].startswith("invalid JSON")
    table = inspect(tmp_path).stdout
    assert "skipped 1 file(s):" in table and "task9999_broken.json: invalid JSON" in table


def test_only_bad_files_fail_with_the_reasons(tmp_path):
    (tmp_path / "task1_no_definition.json").write_text('{"Instances": []}', encoding="utf-8")
    (tmp_path / "task2_bad_output.json").write_text(
        json.dumps({"Definition": ["d"], "Instances": [{"id": "a", "input": "x", "output": [1]}]}), encoding="utf-8"
    )
    result = inspect(tmp_path, "--json")
    assert result.exit_code != 0
    assert "no usable SNI tasks" in result.stderr
    assert "missing Definition" in result.stderr and "non-string answer" in result.stderr
    assert result.stdout == ""
