"""One local Ray cluster per test session, bound to loopback, with more logical CPUs than cores.

More logical CPUs than cores avoids the Ray Data + Ray Train deadlock seen on 2-core machines
(a read task that never gets a CPU while train workers hold them all).
"""

import pytest


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=8,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            log_to_driver=True,
        )
    yield ray
    ray.shutdown()
