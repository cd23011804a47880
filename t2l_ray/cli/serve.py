"""`serve`: run the adapter endpoint (t2l_ray.serve) on Ray Serve until Ctrl-C."""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

import typer

from t2l_ray.cli.console import VerboseOption, capture
from t2l_ray.cli.core import fail, load_checked, local
from t2l_ray.config import NAME_OR_PATH


def _url(host: str, port: int, route_prefix: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}{route_prefix.rstrip('/')}"


def serve_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Hypernet checkpoint folder (path or URI).", callback=local()),
    out: str = typer.Option(..., "--out", help="Store for adapters: POST /v1/adapters writes OUT/ID/ (answers name "
                                               "folders by OUT as given; build_app makes it absolute for the replicas)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the HTTP proxy binds (0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, "--port", help="HTTP port."),
    config_path: Optional[str] = typer.Option(None, "--config", help="YAML of serve settings (replicas, batching, limits)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting, e.g. --set max_batch_size=64."),
    base_model: Optional[str] = typer.Option(
        None, "--base-model", help="Base model (folder, URI or hub name): adds the OpenAI-compatible chat routes.",
        callback=local(NAME_OR_PATH)),
    verbose: bool = VerboseOption,
):
    """Serve POST /v1/adapters (descriptions in, adapters out) on Ray Serve until Ctrl-C; with --base-model,
    also OpenAI's /v1/chat/completions, /v1/completions and /v1/models, answered with the store's adapters.

    With T2L_API_TOKEN set in this environment, /v1 routes need `Authorization: Bearer <token>`. Ray's and
    Serve's logs (one line per request among them) go to OUT/_logs/t2l-ray.log.
    """
    from t2l_ray import storage
    from t2l_ray.checkpoint import verify_checkpoint
    from t2l_ray.serve import ServeConfig, build_app
    from t2l_ray.serve.app import check_base_fits

    config = load_checked(ServeConfig, config_path, overrides)
    config.base_model = base_model or config.base_model
    try:
        verify_checkpoint(checkpoint)  # a damaged copy fails here in one line, not in every replica
        storage.check_writable_folder(out)
        if config.base_model:
            check_base_fits(checkpoint, config.base_model)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535, not {port}")

    with capture(storage.join(out, "_logs"), verbose) as console:  # the driver's own file: OUT as given
        _serve(console, checkpoint, out, host, port, config, build_app)


def _serve(console, checkpoint: str, out: str, host: str, port: int, config, build_app) -> None:
    from ray import serve

    from t2l_ray.raycluster import ensure_ray

    shared = bool(os.environ.get("RAY_ADDRESS"))  # someone else's cluster: remove only our application
    ray = ensure_ray()

    def stop(signum, frame):  # SIGTERM (kubectl, systemd) shuts down like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        serve.start(http_options={"host": host, "port": port})
        application = build_app({"checkpoint": checkpoint, "out": out, "config": config})
        try:
            serve.run(application, name=config.name, route_prefix=config.route_prefix, blocking=False)
        except RuntimeError as error:
            fail(f"the Serve application did not start: {error}", code=1)
        url = _url(host, port, config.route_prefix)
        console.echo(f"serving {checkpoint} -> {out}")
        console.echo(f"  POST {url}/v1/adapters    GET {url}/v1/adapters/ID    {url}/healthz    {url}/docs")
        if config.base_model:
            from t2l_ray.serve.chat_front import default_base_name

            name = config.base_name or default_base_name(config.base_model)
            console.echo(f"  chat with {config.base_model} (model {name!r}, an adapter id, or 't2l:<description>'):")
            console.echo(f"  POST {url}/v1/chat/completions    POST {url}/v1/completions    GET {url}/v1/models")
        if console.log:
            console.echo(f"  logs {console.log}")
        console.echo("Ctrl-C stops it.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.echo("shutting down")
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            serve.delete(config.name) if shared else serve.shutdown()
        finally:
            ray.shutdown()
