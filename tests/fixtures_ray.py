"""One local Ray cluster per test session, with more logical CPUs than cores.

More logical CPUs than cores avoids the Ray Data + Ray Train deadlock seen on 2-core machines
(a read task that never gets a CPU while train workers hold them all). Ray 2.60 resolves a 127.0.0.1
node address to the machine's external one, so the tests talk to Ray only through the driver API and to
HTTP services only on 127.0.0.1.

`ray_cluster` starts no S3 server. Ray workers copy the driver's environment only at `ray.init`, so
`s3_ray_cluster` (for tests whose Ray workers read or write s3:// URIs) starts the S3 server and, when the
session's cluster was started before it, starts the cluster again with the server's variables: at most once
a session, and later Ray tests keep that cluster.
"""

import os

import pytest


class _Session:
    """The session's Ray cluster: how it is started, and which S3 endpoint its workers were given."""

    def __init__(self, temp_root):
        self.temp_root = temp_root
        self.endpoint: str | None = None

    def start(self):
        import ray

        from t2l_ray.raycluster import private_cluster_options

        ray.init(**{**private_cluster_options(), "num_cpus": 8, "_temp_dir": str(self.temp_root.mktemp("ray"))})
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def _ray_session(tmp_path_factory):
    import ray

    session = _Session(tmp_path_factory)
    yield session
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster(_ray_session):
    """The session's Ray cluster, started on first use; its workers see whatever S3 server was up then."""
    import ray

    if not ray.is_initialized():
        _ray_session.start()
    return ray


@pytest.fixture(scope="session")
def s3_ray_cluster(s3_server, _ray_session):
    """The session's Ray cluster with the S3 variables in its workers (`s3_server` is set up first)."""
    import ray

    if ray.is_initialized() and _ray_session.endpoint != s3_server.endpoint:
        ray.shutdown()
    if not ray.is_initialized():
        _ray_session.start()
    return ray
