"""A code error stops a training run at once; only lost workers, nodes and connections are restarted."""

import time

import pytest
import ray.exceptions

from t2l_ray.config import load_config
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.failures import WorkerCodeError, code_error, is_lost_peer

GLOO_PEER_GONE = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:8119.")


def test_code_errors_stop_unless_a_worker_was_lost():
    bug = WorkerCodeError(1, "ValueError: bad", "Traceback ...")
    dead = ray.exceptions.ActorDiedError()
    assert code_error({1: bug}) is bug
    assert code_error({0: GLOO_PEER_GONE, 1: bug}) is bug  # the survivor's collective broke because rank 1 stopped
    assert code_error({0: dead, 1: bug}) is None  # a dead worker explains the rest: restart
    assert code_error({0: GLOO_PEER_GONE}) is None and code_error({0: dead}) is None
    assert is_lost_peer(GLOO_PEER_GONE) and is_lost_peer(dead)
    assert not is_lost_peer(RuntimeError("No backend type associated with device type cpu"))  # nccl + CPU tensor
    assert not is_lost_peer(ValueError("model.config_overrides: hidden_size must be even"))


@pytest.mark.slow
def test_a_code_error_in_the_loop_stops_the_run_at_once_with_its_traceback(ray_cluster, tmp_path):
    """Rank 1 raises while rank 0 waits in a collective; with 3 restarts allowed the run still ends after one try."""
    from t2l_ray.train.common import make_trainer
    from t2l_ray.train.failures import fit

    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def loop(config):
        import os
        from pathlib import Path

        import ray.train
        import torch
        import torch.distributed as dist

        rank = ray.train.get_context().get_world_rank()
        (Path(config["attempts"]) / f"rank{rank}-{os.getpid()}").touch()
        if rank == 1:
            raise ValueError("a recipe the workers cannot run")
        dist.all_reduce(torch.ones(1))  # waits for rank 1, which never comes

    cfg = load_config(TrainConfig, None, ["run.num_workers=2", "run.cpus_per_worker=0.5", "run.max_failures=3",
                                          f"run.output_dir={tmp_path / 'run'}"])
    trainer = make_trainer(cfg, loop, {"attempts": str(attempts)}, str(tmp_path / "run"))
    started = time.time()
    with pytest.raises(WorkerCodeError) as raised:
        fit(trainer)
    error = raised.value
    assert error.rank == 1 and error.message == "ValueError: a recipe the workers cannot run"
    assert 'raise ValueError("a recipe the workers cannot run")' in error.worker_traceback
    assert sorted(p.name.split("-")[0] for p in attempts.iterdir()) == ["rank0", "rank1"], "restarted a code error"
    assert time.time() - started < 120


def test_the_command_shows_a_code_errors_worker_traceback_once_then_one_line():
    import typer
    from typer.testing import CliRunner

    from t2l_ray.cli.train import run_or_fail

    cfg = load_config(TrainConfig, None, [])
    worker_traceback = 'Traceback (most recent call last):\n  File "loop.py", line 9, in loop\nOSError: no weights\n'

    def run(_):
        raise WorkerCodeError(0, "OSError: no weights", worker_traceback)

    app = typer.Typer()
    app.command()(lambda: run_or_fail(run, cfg))
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1 and result.output.count("Traceback") == 1
    assert result.output.strip().splitlines()[-1] == "error: training stopped on a code error, rank 0: OSError: no weights"
