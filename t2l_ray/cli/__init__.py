"""`t2l-ray` command line: each module registers its commands on the shared app."""

from t2l_ray.cli.app import app
from t2l_ray.cli import core  # noqa: F401  (registers commands)
from t2l_ray.cli import factory  # noqa: F401
from t2l_ray.cli import data  # noqa: F401
from t2l_ray.cli import train  # noqa: F401
from t2l_ray.cli import train_lora  # noqa: F401
from t2l_ray.cli import serve  # noqa: F401
from t2l_ray.cli import eval as eval_cli  # noqa: F401

__all__ = ["app"]
