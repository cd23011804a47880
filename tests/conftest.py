"""Shared fixtures, defined in tests/fixtures_*.py and registered here: tiny models built from configs, one local Ray
cluster and one S3 server per session (each started only by the tests that use it), a two-node Ray cluster."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["fixtures_models", "fixtures_multinode", "fixtures_ray", "fixtures_s3"]
