"""Free TCP ports on 127.0.0.1 for the servers tests start (Ray nodes, Serve, the S3 server)."""

from __future__ import annotations

import socket


def free_port(taken: set[int] | None = None) -> int:
    """A port nothing listens on now; with `taken`, also one not handed out before (it is added there)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port
