"""The shared Ray entry point: private-cluster options, the quiet hook, resources no node offers."""

import logging

import pytest

from t2l_ray import raycluster


def test_the_hook_names_the_logger_ray_train_warns_with():
    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    assert placement_group_cleaner.logger.name == raycluster.STATE_API_LOGGER  # a Ray upgrade that moves it fails here
    hook = raycluster.private_cluster_options()["runtime_env"]["worker_process_setup_hook"]
    module, name = hook.rsplit(".", 1)
    assert module == raycluster.__name__ and getattr(raycluster, name) is raycluster.quiet_state_api_warnings
    logger = logging.getLogger(raycluster.STATE_API_LOGGER)
    level = logger.level
    try:
        raycluster.quiet_state_api_warnings()
        assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(level)


def test_logical_cpus_follow_the_environment(monkeypatch):
    monkeypatch.setenv("T2L_RAY_NUM_CPUS", "3")
    assert raycluster.private_cluster_options()["num_cpus"] == 3
    monkeypatch.delenv("T2L_RAY_NUM_CPUS")
    assert raycluster.private_cluster_options()["num_cpus"] >= 8


@pytest.mark.slow
def test_unadvertised_names_resources_no_node_offers(ray_cluster, caplog):
    assert raycluster.unadvertised({"CPU": 1, "gen_gpu": 0.5, "memory": 1}) == ["gen_gpu"]
    assert raycluster.warn_unadvertised({"CPU": 1, "train_gpu": 1}, "train", "run.resources_per_worker") == ["train_gpu"]
    assert raycluster.warn_unadvertised({"CPU": 1}, "train", "run.resources_per_worker") == []
    warned = [r.getMessage() for r in caplog.records if r.name == "t2l_ray"]  # commands show these on the console
    assert len(warned) == 1 and "train: no node offers train_gpu yet" in warned[0]
    assert "check `run.resources_per_worker`" in warned[0]
