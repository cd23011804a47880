"""One way for commands to get a Ray cluster: the one in RAY_ADDRESS, or a private local one.

Ray workers copy the driver's environment only when the cluster starts, so storage settings
(`AWS_ENDPOINT_URL`, credentials) must be set before this is first called; a cluster named by
RAY_ADDRESS needs them set on its own nodes.
"""

from __future__ import annotations

import os


def ensure_ray():
    """Initialise Ray once per process; returns the `ray` module. A no-op when Ray is already initialised."""
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        ray.init(address=address)
    else:
        # A private cluster for this command. Ray 2.60 turns a 127.0.0.1 node address into the machine's
        # external one (services.resolve_ip_for_localhost), so there is no loopback-only option to pass.
        # More logical CPUs than cores: Ray Data tasks must still get scheduled while train workers hold
        # theirs, or a small machine deadlocks (the reader waits for a CPU the trainers never release).
        num_cpus = int(os.environ.get("T2L_RAY_NUM_CPUS", max(8, 2 * (os.cpu_count() or 1))))
        ray.init(include_dashboard=False, num_cpus=num_cpus)
    return ray


def unadvertised(resources: dict[str, float]) -> list[str]:
    """Custom resources that no alive node offers now: work asking for them waits for the autoscaler to add
    such a node, forever on a fixed cluster. Callers warn with these names."""
    import ray

    offered = set().union(*(node["Resources"] for node in ray.nodes() if node["Alive"]))
    return sorted(name for name in resources if name not in offered)
