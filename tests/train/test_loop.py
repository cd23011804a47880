"""The hypernet loop's pieces that run without Ray: metrics rows, the resumable SFT stream, the objectives' shape."""

import itertools
import inspect

import pytest
import torch

from t2l_ray.train.driver import OBJECTIVES
from t2l_ray.train.loop import Objective, metrics_row
from t2l_ray.train.sft import resumable


def test_a_row_has_per_micro_step_means_and_rates_over_all_workers():
    sums = {"loss": 6.0, "lm_loss": 4.0, "tokens": 100.0, "samples": 16.0}  # sums averaged over the workers
    row = metrics_row(7, sums, micro_steps=2, seconds=4.0, world=2, extra={"epoch": 1}, lr=1e-3,
                      grad_norm=torch.tensor(0.5), memory={})
    assert list(row) == ["step", "epoch", "loss", "lm_loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "time"]
    assert (row["loss"], row["lm_loss"], row["tokens_per_s"], row["samples_per_s"]) == (3.0, 2.0, 50.0, 8.0)
    assert row["grad_norm"] == 0.5 and isinstance(row["grad_norm"], float)
    recon = metrics_row(1, {"loss": 1.0, "samples": 4.0}, 1, 2.0, 1, {"delta_w_rel": 0.9}, 0.0, None,
                        {"peak_mem_gib": 1.5})
    assert recon["grad_norm"] is None and recon["peak_mem_gib"] == 1.5 and "tokens_per_s" not in recon


def test_the_stream_resumes_after_the_last_item_taken_and_counts_epochs():
    state = {"epoch": 0, "position": 0}
    taken = list(itertools.islice(resumable(lambda: iter("abc"), state), 4))
    assert taken == ["a", "b", "c", "a"] and state == {"epoch": 1, "position": 1}
    saved = dict(state)  # a checkpoint here; the restarted worker goes on with "b"
    assert list(itertools.islice(resumable(lambda: iter("abc"), saved), 3)) == ["b", "c", "a"]
    end = {"epoch": 0, "position": 3}  # saved on an epoch's last item
    assert next(resumable(lambda: iter("abc"), end)) == "a" and end == {"epoch": 1, "position": 1}
    with pytest.raises(RuntimeError, match="yielded no batch"):
        next(resumable(lambda: iter(()), {"epoch": 0, "position": 0}))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_plugs_into_the_loop(name):
    objective = OBJECTIVES[name]
    for member in ("prepare", "__init__", "micro_batches", "loss", "log_values"):
        wanted = list(inspect.signature(getattr(Objective, member)).parameters)
        assert list(inspect.signature(getattr(objective, member)).parameters) == wanted, member
    assert isinstance(objective.fresh_state, dict) and "step" not in objective.fresh_state
