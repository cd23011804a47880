"""The adapter endpoint (t2l_ray.serve): config and helpers first (fast), then a real Serve app over HTTP (slow).

The slow tests deploy two applications into the session's Ray cluster, on 127.0.0.1 and a free port: one writing
to a local folder with bearer auth on (the token reaches the replica through runtime_env env_vars), one writing to
the session's S3 server with auth off (the AWS variables also go through env_vars, since the session's Ray
cluster may have started before the S3 server did).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from fixtures_models import tiny_checkpoint as make_checkpoint
from ports import free_port
from typer.testing import CliRunner

from t2l_ray import adapters, storage
from t2l_ray.config import ConfigError
from t2l_ray.request_rule import content_id
from t2l_ray.serve import AdapterService, ServeConfig, build_app
from t2l_ray.serve.batcher import Batcher
from t2l_ray.serve.config import RECONFIGURABLE, config_from_args
from t2l_ray.serve.gate import ApiError, token_digest
from t2l_ray.serve.jobs import Job, jobs_for, render_isolated
from t2l_ray.serve.locks import KeyedLocks
from t2l_ray.serve.schema import CreateAdaptersRequest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t2l-test-" + secrets.token_hex(8)
LIMITS = {"max_descriptions": 8, "max_chars": 200, "max_body_bytes": 4096, "max_inline_descriptions": 4}
LOAD_REQUESTS = 300


# ---------------------------------------------------------------------------------------------- fast


def test_config_checks_and_deployment_options():
    config = ServeConfig()
    config.check()
    options = config.deployment_options()
    assert options["num_replicas"] == 1 and "autoscaling_config" not in options
    assert options["max_ongoing_requests"] >= config.max_batch_size
    scaled = config_from_args(None, {"min_replicas": "1", "max_replicas": "4", "num_gpus": "1",
                                     "resources": {"serve_gpu": 1}, "env_vars": {"A": "b"}})
    options = scaled.deployment_options()
    assert "num_replicas" not in options
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0, "resources": {"serve_gpu": 1},
                                            "runtime_env": {"env_vars": {"A": "b"}}}
    for bad, phrase in (({"max_batch_size": 128}, "max_ongoing_requests"), ({"min_replicas": 3}, "above max_replicas"),
                        ({"bogus": 1}, "unknown key"), ({"max_chars": 0}, "at least 1"),
                        ({"route_prefix": "x"}, "must start with '/'")):
        with pytest.raises(ConfigError, match=phrase):
            config_from_args(None, bad)


def test_build_app_needs_checkpoint_and_out():
    with pytest.raises(ConfigError, match="checkpoint"):
        build_app({"out": "/tmp/x"})
    with pytest.raises(ValueError, match="unsupported storage scheme"):
        build_app({"checkpoint": "/tmp/ckpt", "out": "ftp://host/x"})


def test_jobs_serve_yaml_is_a_serve_config():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "jobs" / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "t2l_ray.serve:build_app" and set(app["args"]) == {"checkpoint", "out"}
    (deployment,) = app["deployments"]
    assert deployment["name"] == AdapterService.name
    assert set(deployment["user_config"]) <= set(RECONFIGURABLE)
    assert deployment["max_ongoing_requests"] >= deployment["user_config"]["max_batch_size"]
    assert config["http_options"]["host"] == "127.0.0.1"


def test_jobs_for_applies_the_request_rule_and_the_limits():
    sha, cfg = "ab" * 32, ServeConfig(max_chars=10, max_descriptions=3)

    def jobs(body: dict):
        return jobs_for(CreateAdaptersRequest.model_validate(body), cfg, sha)

    made = jobs({"items": [{"description": "a"}, {"description": "b", "id": "x"}, {"description": "a"}]})
    assert [(j.description, j.adapter_id) for j in made] == [("a", content_id("a", sha)), ("b", "x"), ("a", content_id("a", sha))]
    assert jobs({"description": "c", "id": "c"}) == [Job("c", "c")]
    with pytest.raises(ApiError) as error:
        jobs({"items": [{"description": " "}, {"description": "ok", "id": "Bad"}, {"description": "x" * 11}]})
    assert error.value.status == 422
    assert [(e["loc"], e["type"]) for e in error.value.errors] == [
        ("items[0].description", "empty"), ("items[1].id", "adapter_id"), ("items[2].description", "too_long")]
    with pytest.raises(ApiError, match=r"items\[1\]: id 's' is given twice: first at items\[0\] with a different"):
        jobs({"items": [{"description": "a", "id": "s"}, {"description": "b", "id": "s"}]})
    with pytest.raises(ApiError, match="the limit is 3 per request"):
        jobs({"items": [{"description": "a"}] * 4})


class FlakyGenerator:
    """Fails any batch holding 'boom'; renders the rest as tiny fake adapters."""

    def __init__(self):
        self.calls = []

    def render(self, descriptions, ids):
        self.calls.append(list(descriptions))
        if any("boom" in d for d in descriptions):
            raise RuntimeError("cannot embed boom")
        return [adapters.AdapterFiles({adapters.WEIGHTS_FILE: d.encode()}) for d in descriptions]


def test_render_isolated_fails_only_the_bad_description():
    generator = FlakyGenerator()
    jobs = [Job("one", "a"), Job("boom", "b"), Job("three", "c")]
    outcomes = render_isolated(generator, jobs)
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert "cannot embed boom" in outcomes[1].error
    assert generator.calls[0] == ["one", "boom", "three"] and len(generator.calls) == 4  # one batch, then one by one
    good = render_isolated(generator, [Job("x", "x"), Job("y", "y")])
    assert [o.batch_size for o in good] == [2, 2]


def test_keyed_locks_serialise_one_id_only():
    import asyncio

    async def scenario():
        locks, order = KeyedLocks(), []

        async def worker(name, keys, pause):
            async with locks.hold(keys):
                order.append(f"{name}+")
                await asyncio.sleep(pause)
                order.append(f"{name}-")

        await asyncio.gather(worker("a", ["x", "y"], 0.05), worker("b", ["y", "x"], 0.0), worker("c", ["z"], 0.0))
        return order, locks._locks

    order, left = asyncio.run(scenario())
    assert order.index("a-") < order.index("b+")  # same ids wait, in any key order, without deadlock
    assert order.index("c+") < order.index("a-")  # another id does not wait
    assert left == {}


def test_batcher_batches_what_waited_while_the_last_batch_ran():
    import asyncio

    async def scenario():
        calls, release = [], asyncio.Event()

        async def run(items):
            calls.append(list(items))
            if len(calls) == 1:
                await release.wait()  # the first batch runs until the others are waiting
            if "boom" in items:
                raise RuntimeError("boom")
            return [item.upper() for item in items]

        batcher = Batcher(run, max_batch_size=4, wait_s=0.0)  # no waiting to fill: only what is already there
        first = asyncio.ensure_future(batcher.submit("a"))
        while not calls:
            await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(batcher.submit(x)) for x in "bcdefg"]
        gone = asyncio.ensure_future(batcher.submit("x"))  # a caller that leaves before its batch runs
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        results = await asyncio.gather(first, *waiting)
        failed = await asyncio.gather(batcher.submit("boom"), batcher.submit("h"), return_exceptions=True)
        after = await batcher.submit("i")
        return calls, results, failed, after, batcher.stats

    calls, results, failed, after, stats = asyncio.run(scenario())
    # everything that arrived during the first batch ran in the next ones, full up to max_batch_size
    assert calls[:3] == [["a"], ["b", "c", "d", "e"], ["f", "g"]]
    assert results == ["A", "B", "C", "D", "E", "F", "G"]
    assert calls[3] == ["boom", "h"] and all(isinstance(e, RuntimeError) for e in failed)  # each caller gets the error
    assert after == "I"  # and the queue keeps serving
    assert (stats.batches, stats.items, stats.largest) == (5, 10, 4) and stats.mean == 2.0


def test_token_check():
    class Fake:
        _token_sha256 = token_digest("s3cret")

    check = AdapterService.func_or_class.authorized
    assert check(Fake(), "Bearer s3cret") and check(Fake(), "bearer s3cret")
    assert not any(check(Fake(), h) for h in (None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret"))
    Fake._token_sha256 = None
    assert check(Fake(), None)


def test_cli_serve_rejects_bad_settings_before_starting_ray(tmp_path):
    from t2l_ray.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a hypernet checkpoint" in result.output
    ckpt = str(tmp_path / "ckpt")
    make_checkpoint(ckpt)
    result = runner.invoke(app, ["serve", "--checkpoint", ckpt, "--out", str(tmp_path), "--set", "max_batch_size=999"])
    assert result.exit_code == 2 and "max_ongoing_requests" in result.output


# ---------------------------------------------------------------------------------------------- Serve over HTTP


class Served:
    def __init__(self, base: str, out: Path, s3_out: str, ckpt_sha: str):
        import requests

        self.base, self.out, self.s3_out, self.ckpt_sha = base, out, s3_out, ckpt_sha
        self.http = requests
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def post(self, body=None, *, raw: bytes | None = None, path="/v1/adapters", auth=True, headers=None, prefix=""):
        sent = {**(self.auth if auth else {}), **(headers or {})}
        if raw is not None:
            sent.setdefault("Content-Type", "application/json")
            return self.http.post(self.base + prefix + path, data=raw, headers=sent, timeout=120)
        return self.http.post(self.base + prefix + path, json=body, headers=sent, timeout=120)

    def get(self, path, auth=True, prefix=""):
        return self.http.get(self.base + prefix + path, headers=self.auth if auth else {}, timeout=60)


@pytest.fixture(scope="module")
def served(s3_server, ray_cluster, tmp_path_factory):
    """Two apps in one Serve instance: `/` (local folder, token on) and `/s3` (the S3 server, token off)."""
    import requests
    from ray import serve

    root = tmp_path_factory.mktemp("serve")
    ckpt = str(root / "ckpt")
    sha = make_checkpoint(ckpt)
    out = root / "adapters"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    common = {"checkpoint": ckpt, "num_cpus": 0.5, "max_batch_size": 16, "max_ongoing_requests": 128,
              "batch_wait_timeout_s": 0.05, **LIMITS}
    aws = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server.endpoint}
    # --out as an operator types it, relative: the replicas write under its absolute form and answer with this one.
    local_app = build_app({**common, "out": os.path.relpath(out), "env_vars": {"T2L_API_TOKEN": TOKEN}})
    s3_app = build_app({**common, "out": s3_server.uri("serve"), "env_vars": aws})
    try:
        serve.run_many([serve.RunTarget(local_app, name="t2l-test", route_prefix="/"),
                        serve.RunTarget(s3_app, name="t2l-test-s3", route_prefix="/s3")])
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=5).ok and requests.get(base + "/s3/healthz", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the Serve proxy never answered /healthz"
            time.sleep(0.5)
        yield Served(base, out, s3_server.uri("serve"), sha)
    finally:
        serve.shutdown()


def assert_error(response, status: int, phrase: str):
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and phrase in detail, detail


@pytest.mark.slow
def test_single_adapter_written_and_described(served):
    text = "Classify the sentiment of short product reviews as positive or negative."
    response = served.post({"description": text, "id": "sentiment"})
    assert response.status_code == 200, response.text
    body = response.json()
    (result,) = body["adapters"]
    assert result["id"] == "sentiment" and result["status"] == "written" and result["batch_size"] >= 1
    assert body["checkpoint_sha256"] == served.ckpt_sha
    folder = served.out / "sentiment"
    assert result["uri"] == os.path.join(os.path.relpath(served.out), "sentiment")  # never the server's own path
    weights = (folder / adapters.WEIGHTS_FILE).read_bytes()
    assert result["sha256"] == hashlib.sha256(weights).hexdigest() and result["weights_bytes"] == len(weights)
    report = adapters.validate_adapter(str(folder))
    assert report.ok, report.errors

    info = served.get("/v1/adapters/sentiment")
    assert info.status_code == 200, info.text
    data = info.json()
    assert data["meta"]["description"] == text and data["meta"]["checkpoint_sha256"] == served.ckpt_sha
    assert data["config"]["r"] == 4 and data["config"]["target_modules"] == ["q_proj", "v_proj"]

    again = served.post({"description": text, "id": "sentiment"})
    assert again.status_code == 200 and again.json()["adapters"][0]["status"] == "exists"
    assert_error(served.post({"description": "Something else entirely.", "id": "sentiment"}), 409, "different description")
    missing = served.get("/v1/adapters/nothing-here")
    assert_error(missing, 404, "no adapter 'nothing-here'")
    assert str(served.out.parent) not in missing.text and info.json()["uri"] == result["uri"]
    assert_error(served.get("/v1/adapters/Bad_ID"), 400, "invalid adapter id")


@pytest.mark.slow
def test_batch_request_with_and_without_ids(served):
    items = [{"description": f"Answer questions about topic {i} in one sentence."} for i in range(5)]
    items[1]["id"] = "topic-one"
    items.append(dict(items[0]))  # a repeat shares its adapter
    response = served.post({"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["adapters"]
    assert len(results) == 6 and results[5] == results[0]
    assert results[1]["id"] == "topic-one"
    assert results[0]["id"] == content_id(items[0]["description"], served.ckpt_sha)
    assert all(r["status"] == "written" for r in results)
    for result in results[:5]:
        assert adapters.is_complete(result["uri"])
    assert adapters.validate_adapter(results[2]["uri"]).ok
    # different descriptions give different weights (the checkpoint's heads are perturbed)
    assert len({r["sha256"] for r in results[:5]}) == 5


@pytest.mark.slow
def test_inline_returns_files_and_writes_nothing(served, tmp_path):
    text = "Extract the dates mentioned in an email."
    response = served.post({"description": text, "id": "inline-dates", "return": "inline"})
    assert response.status_code == 200, response.text
    (result,) = response.json()["adapters"]
    assert result["status"] == "inline" and "uri" not in result
    assert set(result["files"]) == set(adapters.REQUIRED_FILES)
    folder = tmp_path / "inline-dates"
    folder.mkdir()
    for name, data in result["files"].items():
        (folder / name).write_bytes(base64.b64decode(data))
    assert hashlib.sha256((folder / adapters.WEIGHTS_FILE).read_bytes()).hexdigest() == result["sha256"]
    assert adapters.validate_adapter(str(folder)).ok
    assert not (served.out / "inline-dates").exists()
    assert served.get("/v1/adapters/inline-dates").status_code == 404


@pytest.mark.slow
def test_health_info_and_openapi(served):
    assert served.get("/healthz", auth=False).json() == {"status": "ok"}
    info = served.get("/v1/info")
    assert info.status_code == 200 and info.json()["checkpoint_sha256"] == served.ckpt_sha
    assert info.json()["limits"]["max_descriptions"] == LIMITS["max_descriptions"]
    schema = served.get("/openapi.json", auth=False)
    assert schema.status_code == 200
    spec = schema.json()
    assert {"/v1/adapters", "/v1/adapters/{adapter_id}", "/healthz"} <= set(spec["paths"])
    assert "CreateAdaptersRequest" in spec["components"]["schemas"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert served.get("/docs", auth=False).status_code == 200


@pytest.mark.slow
def test_auth(served):
    body = {"description": "Auth check."}
    assert_error(served.post(body, auth=False), 401, "bearer token")
    assert served.post(body, auth=False).headers.get("WWW-Authenticate") == "Bearer"
    for header in ("Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer "):
        assert_error(served.post(body, auth=False, headers={"Authorization": header}), 401, "bearer token")
    assert_error(served.get("/v1/adapters/sentiment", auth=False), 401, "bearer token")
    assert_error(served.post(raw=b"{broken", auth=False), 401, "bearer token")  # auth before parsing
    assert served.post(body).status_code == 200
    assert served.get("/healthz", auth=False).status_code == 200


BAD_BODIES = [
    ({"description": ""}, 422, "description is empty"),
    ({"description": "   \n"}, 422, "description is empty"),
    ({"description": "x" * 201}, 422, "the limit is 200"),
    ({"items": [{"description": f"d {i}"} for i in range(9)]}, 422, "the limit is 8"),
    ({"items": []}, 422, "'items' is empty"),
    ({"description": "ok", "id": "Bad/ID"}, 422, "invalid adapter id"),
    ({"description": "ok", "id": "a..b"}, 422, "invalid adapter id"),
    ({"description": "ok", "id": "x" * 129}, 422, "invalid adapter id"),
    ({"description": 5}, 422, "description: Input should be a valid string"),
    ({"description": ["a"]}, 422, "valid string"),
    ({"items": [{"description": "a", "id": 3}]}, 422, "items[0].id"),
    ({"descriptions": ["x"]}, 422, "Extra inputs are not permitted"),
    ({"description": "a", "items": [{"description": "b"}]}, 422, "not both or neither"),
    ({}, 422, "not both or neither"),
    ([1, 2], 422, "valid dictionary"),
    ("just a string", 422, "valid dictionary"),
    ({"description": "ok", "return": "zip"}, 422, "return"),
    ({"description": "a", "items": None, "id": None, "return": "inline", "x": 1}, 422, "Extra inputs"),
    ({"items": [{"description": f"d {i}"} for i in range(5)], "return": "inline"}, 422, "max_inline_descriptions"),
    ({"items": [{"description": "a", "id": "same"}, {"description": "b", "id": "same"}]}, 422, "given twice"),
]

BAD_RAW = [
    (b"{not json", 400, "malformed JSON"),
    (b'{"description": "unterminated', 400, "malformed JSON"),
    # json.loads raises RecursionError here, not JSONDecodeError; FastAPI answers 400 for any parse failure
    (b"[" * 3000, 400, "error parsing the body"),
    (b'{"description": ' + b"[" * 3000, 400, "error parsing the body"),
    (b"", 422, "Field required"),
    (b'{"description": "\\ud800 lone surrogate"}', 422, "lone surrogate"),
    (json.dumps({"description": "y" * 5000}).encode(), 413, "the limit is 4096"),
]


@pytest.mark.slow
def test_bad_input_is_a_4xx_with_a_message(served):
    for body, status, phrase in BAD_BODIES:
        response = served.post(body)
        assert response.status_code == status, (body, response.status_code, response.text)
        assert phrase in response.json()["detail"], (body, response.json())
    for raw, status, phrase in BAD_RAW:
        assert_error(served.post(raw=raw), status, phrase)
    text_plain = served.post(raw=b"describe a task", headers={"Content-Type": "text/plain"})
    assert text_plain.status_code == 422, text_plain.text
    chunked = served.post(raw=iter([b'{"description": "', b"z" * 5000, b'"}']))  # no Content-Length
    assert_error(chunked, 413, "the limit is 4096")
    # the replica is still there and still answers
    assert served.get("/healthz", auth=False).status_code == 200
    assert served.post({"description": "Still alive after bad input."}).status_code == 200


@pytest.mark.slow
def test_concurrent_load_is_batched_with_no_5xx(served):
    def call(i: int):
        if i % 30 == 7:
            return served.post(raw=b"{oops").status_code, None
        if i % 30 == 19:
            return served.post({"description": ""}).status_code, None
        response = served.post({"description": f"Load task {i}: label support tickets about product area {i % 17}."})
        return response.status_code, response.json()["adapters"][0] if response.ok else response.text

    before = served.get("/v1/info").json()["stats"]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=48) as pool:
        results = list(pool.map(call, range(LOAD_REQUESTS)))
    seconds = time.monotonic() - started
    statuses = [status for status, _ in results]
    assert not [s for s in statuses if s >= 500], [r for r in results if r[0] >= 500][:3]
    good = [r for status, r in results if status == 200]
    bad = [s for s in statuses if s != 200]
    assert len(good) + len(bad) == LOAD_REQUESTS and set(bad) <= {400, 422}
    assert len(good) == LOAD_REQUESTS - 2 * LOAD_REQUESTS // 30
    sizes = [r["batch_size"] for r in good]
    assert max(sizes) > 1, f"no batching: {sizes[:20]}"
    assert all(adapters.is_complete(r["uri"]) for r in good)
    for result in good[:: len(good) // 3][:3]:
        assert adapters.validate_adapter(result["uri"]).ok
    stats = served.get("/v1/info").json()["stats"]
    assert stats["mean_batch_size"] == pytest.approx(stats["descriptions"] / stats["batches"], abs=1e-3)
    # one description per request: a mean above 1 over the load's batches is requests sharing a forward
    batches, generated = stats["batches"] - before["batches"], stats["descriptions"] - before["descriptions"]
    assert generated == len(good) and generated / batches > 1, (before, stats)
    print(f"\n{LOAD_REQUESTS} requests in {seconds:.1f} s ({LOAD_REQUESTS / seconds:.0f}/s); "
          f"largest batch {max(sizes)}, mean {generated / batches:.1f}; replica stats {stats}")


@pytest.mark.slow
def test_s3_store(served):
    text = "Rewrite formal emails in a casual tone."
    response = served.post({"items": [{"description": text, "id": "s3-casual"}, {"description": "Name the capital city."}]},
                           auth=False, prefix="/s3")
    assert response.status_code == 200, response.text
    first, second = response.json()["adapters"]
    assert first["uri"] == storage.join(served.s3_out, "s3-casual") and first["status"] == "written"
    for result in (first, second):
        report = adapters.validate_adapter(result["uri"])
        assert report.ok, report.errors
    info = served.get("/v1/adapters/s3-casual", auth=False, prefix="/s3")
    assert info.status_code == 200 and info.json()["meta"]["description"] == text
    assert served.post({"description": text, "id": "s3-casual"}, auth=False, prefix="/s3").json()["adapters"][0]["status"] == "exists"
