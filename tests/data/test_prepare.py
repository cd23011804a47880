"""A recipe's training data resolved on the driver: tasks, tokenizer, task files for the workers (fast, no Ray)."""

from pathlib import Path

from t2l_ray.config import load_config
from t2l_ray.data.prepare import prepare_tokenizer, select_tasks, task_uris
from t2l_ray.data.suite import build_suite
from t2l_ray.data.tokenizer import load_tokenizer
from t2l_ray.train.config import TrainConfig


def scratch_of(tmp_path):
    scratch = tmp_path / f"scratch{len(list(tmp_path.iterdir()))}"
    scratch.mkdir()
    return str(scratch)


def selected(tmp_path, *overrides):
    cfg = load_config(TrainConfig, None, ["data.source=suite", *overrides])
    tasks, skipped, descriptions = select_tasks(cfg, scratch_of(tmp_path))
    assert not skipped and set(descriptions) == {t.name for t in tasks}
    return sorted(t.name for t in tasks)


def test_the_suite_trains_on_its_training_split_unless_a_task_list_names_tasks(tmp_path):
    suite = build_suite(0)
    assert selected(tmp_path) == sorted(t.name for t in suite.train)
    held_out = [t.name for t in suite.held_out[:3]]
    listed = tmp_path / "oracle_tasks.txt"
    listed.write_text("".join(f"{name}\n" for name in held_out))
    assert selected(tmp_path, f"data.task_list={listed}") == sorted(held_out)  # oracle LoRAs for evaluated tasks
    assert selected(tmp_path, f"data.task_list={listed}", f"data.heldout_tasks=[{held_out[0]}]") == sorted(held_out[1:])


def test_a_trained_tokenizer_is_saved_in_the_run_and_the_same_for_the_same_tasks(tmp_path):
    cfg = load_config(TrainConfig, None, ["data.source=suite", "model.tokenizer=train"])
    tasks, _, _ = select_tasks(cfg, scratch_of(tmp_path))
    run = tmp_path / "run"
    local, vocab = prepare_tokenizer(cfg, tasks, str(run), scratch_of(tmp_path))
    assert (run / "tokenizer" / "tokenizer.json").is_file() and vocab == len(load_tokenizer(run / "tokenizer"))
    again, _ = prepare_tokenizer(cfg, tasks, str(tmp_path / "again"), scratch_of(tmp_path))
    assert (tmp_path / "again" / "tokenizer" / "tokenizer.json").read_bytes() == Path(local, "tokenizer.json").read_bytes()


def test_workers_read_the_generated_suite_from_the_run_and_a_local_source_in_place(tmp_path):
    cfg = load_config(TrainConfig, None, ["data.source=suite"])
    tasks, _, _ = select_tasks(cfg, scratch_of(tmp_path))
    uris = task_uris(cfg, tasks, str(tmp_path / "run"))  # the scratch copy goes away; the run folder is shared
    assert uris == [str(tmp_path / "run" / "data" / "tasks" / Path(t.source_file).name) for t in tasks]
    assert all(Path(u).read_bytes() == Path(t.source_file).read_bytes() for u, t in zip(uris, tasks))

    folder = Path(tasks[0].source_file).parent
    local = load_config(TrainConfig, None, [f"data.source={folder}"])
    assert task_uris(local, tasks, str(tmp_path / "other")) == [t.source_file for t in tasks]
    assert not (tmp_path / "other").exists()
