"""`t2l-ray` command line: `main.COMMANDS` maps every command name to its function; `app` is built from it."""

from t2l_ray.cli.main import app

__all__ = ["app"]
