"""One local Ray cluster per test session, with more logical CPUs than cores.

More logical CPUs than cores avoids the Ray Data + Ray Train deadlock seen on 2-core machines
(a read task that never gets a CPU while train workers hold them all). Ray 2.60 resolves a 127.0.0.1
node address to the machine's external one, so the tests talk to Ray only through the driver API and to
HTTP services only on 127.0.0.1.
"""

import pytest


@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory):
    """Depends on `s3_server` so the S3 settings are in the environment before Ray workers copy it."""
    import ray

    from t2l_ray.raycluster import private_cluster_options

    if not ray.is_initialized():
        ray.init(**{**private_cluster_options(), "num_cpus": 8, "_temp_dir": str(tmp_path_factory.mktemp("ray"))})
    yield ray
    ray.shutdown()
