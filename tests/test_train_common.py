"""Task selection shared by `train` and `train-lora` (fast, no Ray)."""

from t2l_ray.config import load_config
from t2l_ray.data.suite import build_suite
from t2l_ray.train.common import select_tasks
from t2l_ray.train.config import TrainConfig


def selected(tmp_path, *overrides):
    cfg = load_config(TrainConfig, None, ["data.source=suite", *overrides])
    scratch = tmp_path / f"scratch{len(list(tmp_path.iterdir()))}"
    scratch.mkdir()
    tasks, skipped, descriptions = select_tasks(cfg, str(scratch))
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
