"""The adapter factory (`batch-generate`): line checks, the manifest, and whole runs on Ray, local and on S3."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures_models import tiny_checkpoint as make_checkpoint
from typer.testing import CliRunner

from t2l_ray import adapters, checkpoint, manifest, storage
from t2l_ray.cli import app
from t2l_ray.factory import FactoryConfig, input_files, parse_line, plan_run, run_factory, runs_in_process, steady_rate
from t2l_ray.generator import Generator
from t2l_ray.request_rule import content_id

runner = CliRunner()
GOOD = 200
ON_RAY = ("--set", "in_process_max=0")  # jobs this small would run in-process; these tests are about Ray


def bad_lines(first_id: str) -> dict[int, tuple[str, str]]:
    """Line number -> (text, a phrase its error must contain), spread among the good lines."""
    return {
        3: ("{not json", "invalid JSON"),
        17: ("[1, 2]", "expected a JSON object"),
        40: (json.dumps({"id": "lonely"}), "'description' is missing"),
        41: (json.dumps({"description": "   "}), "description is empty"),
        77: (json.dumps({"description": "x" * 4001}), "the limit is 4000"),
        90: (json.dumps({"description": "ok", "id": "a:b"}), "invalid adapter id"),
        120: (json.dumps({"description": "ok", "id": "a/b"}), "invalid adapter id"),
        150: (json.dumps({"description": "ok", "id": "a..b"}), "invalid adapter id"),
        160: (json.dumps({"description": "another text", "id": first_id}), "with a different description"),
        210: (json.dumps({"description": "ok", "metadata": [1]}), "'metadata' must be a JSON object"),
    }


def write_input(path: str, ckpt_sha: str, with_bad: bool = True) -> tuple[dict[int, str], dict[int, str]]:
    """GOOD descriptions (ids given for some, content hashes for the rest) plus 10 bad lines when asked.

    Returns (line -> expected adapter id of the good lines, line -> a phrase of the bad lines' errors).
    """
    good = []
    for i in range(GOOD):
        row = {"description": f"Task {i}: answer questions about topic number {i} in {'short' if i % 3 else 'long'} form."}
        if i % 2 == 0:
            row["id"] = f"task-{i:03d}"
        if i % 5 == 0:
            row["metadata"] = {"source": "test", "index": i}
        good.append(row)
    bad = bad_lines("task-000") if with_bad else {}
    lines, ids, rows = [], {}, iter(good)
    for number in range(1, GOOD + len(bad) + 1):
        if number in bad:
            lines.append(bad[number][0])
        else:
            row = next(rows)
            lines.append(json.dumps(row))
            ids[number] = row.get("id") or content_id(row["description"], ckpt_sha)
    storage.write_text(path, "\n".join(lines) + "\n")
    return ids, {number: phrase for number, (_, phrase) in bad.items()}


def check_manifest(out: str, ids: dict[int, str], bad: dict[int, str], source: str, fresh: set[str] | None = None) -> None:
    """The newest row per line is right: good lines name their adapter (uri, bytes, sha256), bad ones their error.

    `fresh`: the ids this run wrote (the others must be skipped); None when that is not known.
    """
    latest = manifest.latest_by_line(out)
    assert sorted(latest) == sorted([*ids, *bad])
    for line, adapter_id in ids.items():
        row, folder = latest[line], storage.join(out, adapter_id)
        weights = storage.read_bytes(storage.join(folder, adapters.WEIGHTS_FILE))
        assert row["status"] in ("written", "skipped") and row["error"] is None, row
        assert (row["id"], row["uri"]) == (adapter_id, folder)
        assert (row["bytes"], row["sha256"]) == (len(weights), hashlib.sha256(weights).hexdigest())
        if fresh is not None:
            assert row["status"] == ("written" if adapter_id in fresh else "skipped"), row
    for line, phrase in bad.items():
        row = latest[line]
        assert row["status"] == "failed" and row["error"].startswith(f"{source}:{line}: ") and phrase in row["error"], row


def folders(out: Path) -> set[str]:
    """Adapter folders: the manifest (`_manifest/`) and the command's log (`_logs/`) are not adapters."""
    return {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_")}


def batch_generate(*args: str):
    return runner.invoke(app, ["batch-generate", *args])


def assert_no_stray_files(out: Path) -> None:
    """Every adapter folder holds exactly the contract's files; the manifest folder only run files, the log
    folder only the log."""
    for folder in out.iterdir():
        names = {p.name for p in folder.iterdir()}
        if folder.name == manifest.MANIFEST_DIR:
            assert all(re.fullmatch(r"run-.*-\d{4}\.jsonl", n) for n in names), names
        elif folder.name == "_logs":
            assert names == {"t2l-ray.log"}, names
        else:
            assert names == set(adapters.REQUIRED_FILES), (folder.name, names)


# ------------------------------------------------------------------------------------------------ no Ray


@pytest.mark.parametrize("text,phrase", [
    (b"{", "invalid JSON"),
    (b"\xff\xfe", "not valid UTF-8"),
    (b'"just a string"', "expected a JSON object, got str"),
    (b'{"description": 42}', "'description' must be a string"),
    (b'{"description": ""}', "description is empty"),
    (b'{"id": "x"}', "'description' is missing"),
    (b'{"description": "a\\ud800"}', "not valid Unicode"),
    (b'{"description": "ok", "desc": "typo"}', "unknown key(s) ['desc']"),
    (b'{"description": "ok", "id": "Upper"}', "invalid adapter id"),
    (b'{"description": "ok", "id": 7}', "invalid adapter id"),
    (b'{"description": "ok", "metadata": "x"}', "'metadata' must be a JSON object"),
    (b'{"description": "0123456789a"}', "has 11 characters; the limit is 10"),
])
def test_bad_lines_name_file_and_line(text, phrase):
    with pytest.raises(ValueError) as error:
        parse_line(7, "in.jsonl:7", text, max_chars=10)
    assert str(error.value).startswith("in.jsonl:7: ") and phrase in str(error.value)


def test_good_line():
    request = parse_line(2, "f:2", b'{"description": "Sort words.", "id": "sort_1", "metadata": {"k": 1}}\r', 100)
    assert (request.description, request.given_id, request.metadata) == ("Sort words.", "sort_1", {"k": 1})
    assert parse_line(3, "f:3", b'{"description": "x", "id": null}', 100).given_id is None


def test_input_files(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "notes.txt"):
        (tmp_path / name).write_text("{}\n")
    assert input_files(str(tmp_path)) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert input_files(str(tmp_path / "*.txt")) == [str(tmp_path / "notes.txt")]
    assert input_files(f"file://{tmp_path}/b*") == [f"file://{tmp_path}/b.jsonl"]
    with pytest.raises(FileNotFoundError, match="no input file matches"):
        input_files(str(tmp_path / "*.csv"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        input_files(str(tmp_path / "missing.jsonl"))


def test_line_numbers_run_over_files_and_blank_lines(tmp_path, tiny_ckpt):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.jsonl").write_text('{"description": "a"}\n\n{"description": "b"}\n')
    (tmp_path / "in" / "2.jsonl").write_text('{"description": "c"}\n{oops\n')
    plan = plan_run(input_files(str(tmp_path / "in")), str(tmp_path / "out"), tiny_ckpt[1], FactoryConfig())
    assert [r.line for r, _ in plan.todo] == [1, 3, 4] and plan.lines == 5 and plan.total == 4
    (bad,) = plan.rows
    assert bad["line"] == 5 and bad["error"].startswith(f"{tmp_path / 'in' / '2.jsonl'}:2: invalid JSON")


def test_plan_repeats_disk_state_and_fail_fast(tmp_path, tiny_ckpt, minilm):
    """Repeats share an adapter; what is on disk is skipped or, when it is another adapter, a failed line."""
    ckpt_uri, sha = tiny_ckpt
    out = str(tmp_path / "out")
    generator = Generator(checkpoint.load_checkpoint(ckpt_uri), encoder=minilm)
    texts = ["Translate to French.", "Write a haiku.", "Count the vowels."]
    made = generator.render_embeddings(torch.randn(3, 384), texts, ["fr", "haiku", "vowels"])
    for adapter_id, files in zip(["fr", "haiku", "vowels"], made):
        adapters.write_adapter(storage.join(out, adapter_id), files)
    storage.delete(storage.join(out, "vowels", adapters.CONFIG_FILE))  # a half-written folder: made again
    lines = [
        {"description": "Translate to French.", "id": "fr"},  # 1: already made -> skipped
        {"description": "New task."},  # 2: to make, under a content id
        {"description": "Write a limerick.", "id": "haiku"},  # 3: on disk for another description -> failed
        {"description": "Count the vowels.", "id": "vowels"},  # 4: incomplete on disk -> to make
        {"description": "Count the vowels.", "id": "vowels"},  # 5: a repeat of line 4
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    plan = plan_run([str(path)], out, sha, FactoryConfig())
    rows = {row["line"]: row for row in plan.rows}
    assert rows[1]["status"] == "skipped" and rows[1]["sha256"] == hashlib.sha256(made[0].files[adapters.WEIGHTS_FILE]).hexdigest()
    assert rows[3]["status"] == "failed" and "already holds an adapter for a different description" in rows[3]["error"]
    assert [(r.line, i) for r, i in plan.todo] == [(2, content_id("New task.", sha)), (4, "vowels")]
    assert [r.line for r in plan.followers[4]] == [5] and plan.total == 5

    stopped = plan_run([str(path)], out, sha, FactoryConfig(fail_fast=True))
    assert stopped.stopped_at == 3 and [row["line"] for row in stopped.rows] == [1, 3]
    assert [r.line for r, _ in stopped.todo] == [2] and stopped.followers == {}


def test_fail_fast_cli_stops_at_the_first_bad_line(tmp_path, tiny_ckpt):
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    source.write_text('{"description": "a", "id": "a"}\n{"id": "no-description"}\n{"description": "c"}\n')
    # Without --fail-fast the bad line is only reported; with it, the run stops there.
    plan = plan_run([str(source)], str(out), tiny_ckpt[1], FactoryConfig())
    assert [r.line for r, _ in plan.todo] == [1, 3]
    source.write_text('{"id": "no-description"}\n{"description": "b"}\n')
    result = batch_generate(str(source), "--checkpoint", tiny_ckpt[0], "--out", str(out), "--fail-fast")
    assert result.exit_code == 1 and "stopped at line 1" in result.output and "failed line 1: " in result.output
    assert folders(out) == set()
    assert [(row["line"], row["status"]) for row in manifest.read_rows(str(out))] == [(1, "failed")]


def test_bad_config_and_checkpoint_exit_2(tmp_path, tiny_ckpt):
    (tmp_path / "in.jsonl").write_text('{"description": "x"}\n')
    result = batch_generate(str(tmp_path / "in.jsonl"), "--checkpoint", tiny_ckpt[0], "--out", str(tmp_path), "--batch-size", "0")
    assert result.exit_code == 2 and "batch_size must be at least 1" in result.output
    result = batch_generate(str(tmp_path / "in.jsonl"), "--checkpoint", str(tmp_path / "no"), "--out", str(tmp_path))
    assert result.exit_code == 2 and "not a hypernet checkpoint" in result.output
    result = batch_generate(str(tmp_path / "in.jsonl"), "--checkpoint", tiny_ckpt[0], "--out", str(tmp_path), "--set", "gpus=1")
    assert result.exit_code == 2 and "unknown key(s) ['gpus']" in result.output
    result = batch_generate(str(tmp_path / "in.jsonl"), "--checkpoint", tiny_ckpt[0], "--out", str(tmp_path),
                            "--set", "resources.gen_gpu=0")
    assert result.exit_code == 2 and "resources must map resource names to amounts > 0" in result.output
    assert not list(tmp_path.glob("_manifest*"))  # refused before anything was recorded


def flip_one_byte(ckpt: str) -> None:
    path = Path(ckpt) / checkpoint.WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def no_work(monkeypatch):
    """Bad input must be refused on the driver before any stage is built or Ray is started."""
    import t2l_ray.factory.run as run

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(run, "ensure_ray", refuse)
    monkeypatch.setattr(run, "in_process_stages", refuse)


def one_line_error(result, phrase: str) -> str:
    """Exit 2 and exactly one line, `error: ...` containing `phrase` (no traceback, no summary)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and phrase in lines[0], lines[0]
    return lines[0]


def test_bad_inputs_fail_on_the_driver_in_one_line(tmp_path, tiny_ckpt, no_work):
    good = tmp_path / "in.jsonl"
    good.write_text('{"description": "Sort the words."}\n')
    ckpt = tiny_ckpt[0]

    taken = tmp_path / "taken.txt"
    taken.write_text("someone's notes")
    line = one_line_error(batch_generate(str(good), "--checkpoint", ckpt, "--out", str(taken)), "is a file, not a folder")
    assert str(taken) in line and taken.read_text() == "someone's notes"
    one_line_error(batch_generate(str(good), "--checkpoint", ckpt, "--out", str(taken / "below")), "not a writable folder")

    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n\r\n")):
        (tmp_path / name).write_text(text)
        line = one_line_error(batch_generate(str(tmp_path / name), "--checkpoint", ckpt, "--out", str(tmp_path / "out")),
                              "no descriptions")
        assert str(tmp_path / name) in line

    damaged = tmp_path / "damaged"
    make_checkpoint(str(damaged))
    flip_one_byte(str(damaged))
    line = one_line_error(batch_generate(str(good), "--checkpoint", str(damaged), "--out", str(tmp_path / "out")),
                          "does not match the sha256 recorded in hypernet.json")
    assert str(damaged) in line
    assert not (tmp_path / "out").exists()  # nothing was created for any of them


def test_generate_and_serve_refuse_a_damaged_checkpoint_or_a_file_as_out(tmp_path):
    damaged = str(tmp_path / "damaged")
    make_checkpoint(damaged)
    flip_one_byte(damaged)
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", damaged, "--description", "Sort words.",
                                       "--out", str(tmp_path / "out")]), "does not match the sha256")
    one_line_error(runner.invoke(app, ["serve", "--checkpoint", damaged, "--out", str(tmp_path / "out")]),
                   "does not match the sha256")
    assert not (tmp_path / "out").exists()
    good = str(tmp_path / "good")
    make_checkpoint(good)
    (tmp_path / "file").write_text("x")
    for command in (["generate", "--description", "Sort words."], ["serve"]):
        one_line_error(runner.invoke(app, [*command, "--checkpoint", good, "--out", str(tmp_path / "file")]),
                       "is a file, not a folder")


def test_damaged_checkpoint_from_a_real_process_prints_no_traceback(tmp_path, tiny_ckpt):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"description": f"Task {i}."}) + "\n" for i in range(100)))
    damaged = str(tmp_path / "damaged")
    make_checkpoint(damaged)
    flip_one_byte(damaged)
    # 100 lines with in_process_max=0: a run that would start Ray must refuse before it does.
    proc = subprocess.run([sys.executable, "-m", "t2l_ray", "batch-generate", str(source), "--checkpoint", damaged,
                           "--out", str(tmp_path / "out"), "--set", "in_process_max=0"],
                          capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""}, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {damaged}: hypernet.safetensors does not match")


def test_small_jobs_run_in_process_unless_ray_is_named(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runs_in_process(FactoryConfig(), 256) and not runs_in_process(FactoryConfig(), 257)
    assert not runs_in_process(FactoryConfig(in_process_max=0), 1)
    assert runs_in_process(FactoryConfig(local=True, in_process_max=0), 10_000)
    assert not runs_in_process(FactoryConfig(resources={"gen_gpu": 1}), 1)  # placement only Ray can do
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not runs_in_process(FactoryConfig(), 1)
    with pytest.raises(ValueError, match="RAY_ADDRESS names a cluster"):
        runs_in_process(FactoryConfig(local=True), 1)


def test_steady_rate_leaves_out_the_first_batch():
    # Batch 2: the first batch lands at 10 s (start-up), then one adapter every 0.5 s.
    arrivals = [10.0, 10.0, 10.5, 11.0, 11.5, 12.0]
    assert steady_rate(arrivals, 2) == pytest.approx(4 / 2.0)
    assert steady_rate(arrivals[:5], 2) is None  # fewer than three batches: no steady rate


def test_summary_shows_the_wall_and_the_steady_rate(tmp_path, tiny_ckpt):
    source, out = tmp_path / "in.jsonl", tmp_path / "relative-out"
    source.write_text("".join(json.dumps({"description": f"Task {i}."}) + "\n" for i in range(6)))
    result = batch_generate(str(source), "--checkpoint", tiny_ckpt[0], "--out", str(out), "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "(in this process)" in result.output and "written             6" in result.output
    assert re.search(r"wall rate +[\d.]+ adapters/s, [\d.]+ MB/s: 6 written in [\d.]+ s since the command started",
                     result.output), result.output
    assert re.search(r"steady rate +[\d.]+ adapters/s after the first batch", result.output), result.output


def test_manifest_and_messages_name_out_as_given(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in.jsonl").write_text('{"description": "Sort the words.", "id": "sort"}\n')
    result = batch_generate("in.jsonl", "--checkpoint", tiny_ckpt[0], "--out", "adapters")
    assert result.exit_code == 0 and "-> adapters (in this process)" in result.output, result.output
    (row,) = manifest.read_rows("adapters")
    assert row["uri"] == "adapters/sort" and str(tmp_path) not in result.output


# ------------------------------------------------------------------------------------------------ on Ray


def kill_midway(args: list[str], out: Path, log: Path, env: dict, **popen) -> set[str]:
    """Run `t2l-ray ARGS` and SIGKILL it once 6 adapters are complete; the ids complete at that moment."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "t2l_ray", *args], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + 180
        while not out.is_dir() or sum(adapters.is_complete(str(p)) for p in out.iterdir()) < 6:
            assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no adapters after 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver only: on Ray its actors die with it, the cluster stays
        proc.wait(timeout=30)
    complete = {p.name for p in out.iterdir() if adapters.is_complete(str(p))}
    assert 0 < len(complete) < GOOD
    return complete


@pytest.mark.slow
def test_batch_generate_local_then_rerun(tmp_path, tiny_ckpt, ray_cluster):
    ckpt_uri, sha = tiny_ckpt
    out, source = tmp_path / "adapters", str(tmp_path / "in.jsonl")
    ids, bad = write_input(source, sha)
    every = set(ids.values())

    result = batch_generate(source, "--checkpoint", ckpt_uri, "--out", str(out), "--batch-size", "16", *ON_RAY)
    assert result.exit_code == 1, result.output
    assert "written           200" in result.output and "skipped             0" in result.output
    assert "failed             10" in result.output and "failed line 160: " in result.output
    assert folders(out) == every
    check_manifest(str(out), ids, bad, source, fresh=every)
    for adapter_id in sorted(every):
        check = runner.invoke(app, ["validate-adapter", str(out / adapter_id), "--max-lora-rank", "4"])
        assert check.exit_code == 0, check.output
    meta = json.loads((out / "task-010" / adapters.META_FILE).read_text())
    assert meta["metadata"] == {"source": "test", "index": 10} and meta["checkpoint_sha256"] == sha
    a, b = (storage.read_bytes(str(out / i / adapters.WEIGHTS_FILE)) for i in ("task-000", "task-002"))
    assert a != b  # the perturbed heads make adapters depend on the description

    def adapter_files():  # not the manifest or the log, which every run adds to
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if not p.relative_to(out).parts[0].startswith("_")}

    before = adapter_files()
    result = batch_generate(source, "--checkpoint", ckpt_uri, "--out", str(out), *ON_RAY)
    assert result.exit_code == 1 and "written             0" in result.output and "skipped           200" in result.output
    assert adapter_files() == before
    check_manifest(str(out), ids, bad, source, fresh=set())
    assert len(manifest.manifest_files(str(out))) == 2


@pytest.mark.slow
def test_batch_generate_on_s3(s3_server, s3_ray_cluster):
    ckpt_uri, out, source = s3_server.uri("factory/ckpt"), s3_server.uri("factory/adapters"), s3_server.uri("factory/in.jsonl")
    sha = make_checkpoint(ckpt_uri, seed=1)
    ids, bad = write_input(source, sha)
    every = set(ids.values())

    result = batch_generate(source, "--checkpoint", ckpt_uri, "--out", out, "--batch-size", "32", *ON_RAY)
    assert result.exit_code == 1 and "written           200" in result.output, result.output
    assert set(storage.list_dir(out)) == every | {manifest.MANIFEST_DIR, "_logs"}
    check_manifest(out, ids, bad, source, fresh=every)
    for adapter_id in sorted(every):
        check = runner.invoke(app, ["validate-adapter", storage.join(out, adapter_id)])
        assert check.exit_code == 0, check.output

    result = batch_generate(s3_server.uri("factory/*.jsonl"), "--checkpoint", ckpt_uri, "--out", out, *ON_RAY)
    assert result.exit_code == 1 and "written             0" in result.output and "skipped           200" in result.output
    check_manifest(out, ids, bad, source, fresh=set())


@pytest.mark.slow
def test_killed_run_is_completed_by_a_rerun(tmp_path, tiny_ckpt, ray_cluster):
    """SIGKILL the CLI midway: no half-visible adapter, and a rerun finishes the job without remaking any."""
    ckpt_uri, sha = tiny_ckpt
    out, source = tmp_path / "adapters", str(tmp_path / "in.jsonl")
    ids, _ = write_input(source, sha, with_bad=False)
    every = set(ids.values())
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    complete = kill_midway(["batch-generate", source, "--checkpoint", ckpt_uri, "--out", str(out), "--batch-size", "2"],
                           out, tmp_path / "killed.log", env, start_new_session=True)

    result = batch_generate(source, "--checkpoint", ckpt_uri, "--out", str(out), *ON_RAY)
    assert result.exit_code == 0, result.output
    assert folders(out) == every and all(adapters.is_complete(str(out / i)) for i in every)
    assert_no_stray_files(out)
    check_manifest(str(out), ids, {}, source)
    rerun = [json.loads(t) for t in storage.read_text(manifest.manifest_files(str(out))[-1]).splitlines()]
    assert sorted(row["line"] for row in rerun) == list(range(1, GOOD + 1))
    assert {row["id"] for row in rerun if row["status"] == "written"}.isdisjoint(complete)
    assert {row["id"] for row in rerun} == every


@pytest.mark.slow
def test_in_process_and_ray_write_the_same_files(tmp_path, tiny_ckpt, ray_cluster):
    ckpt_uri, _ = tiny_ckpt
    source = tmp_path / "in.jsonl"
    lines = [{"description": f"Task {i}: sort the words of a sentence by length, then by position {i}."} for i in range(5)]
    lines[1]["id"], lines[3]["metadata"] = "with-id", {"team": "search"}
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    here = run_factory(str(source), ckpt_uri, str(tmp_path / "here"), FactoryConfig(batch_size=2, local=True))
    on_ray = run_factory(str(source), ckpt_uri, str(tmp_path / "ray"), FactoryConfig(batch_size=2, in_process_max=0))
    assert (here.where, on_ray.where, here.written, on_ray.written) == ("this process", "Ray", 5, 5)
    rows = {name: {row["id"]: row for row in manifest.read_rows(str(tmp_path / name))} for name in ("here", "ray")}
    assert {i: r["sha256"] for i, r in rows["here"].items()} == {i: r["sha256"] for i, r in rows["ray"].items()}
    for adapter_id in rows["here"]:
        a, b = tmp_path / "here" / adapter_id, tmp_path / "ray" / adapter_id
        for name in (adapters.WEIGHTS_FILE, adapters.CONFIG_FILE):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (adapter_id, name)
        meta_a, meta_b = (json.loads((f / adapters.META_FILE).read_text()) for f in (a, b))
        assert meta_a.pop("created_at") and meta_b.pop("created_at") and meta_a == meta_b


@pytest.mark.slow
def test_killed_in_process_run_leaves_no_stray_files(tmp_path, tiny_ckpt):
    """SIGKILL a real run mid-way; the rerun completes every folder and no temp file survives in any."""
    ckpt_uri, sha = tiny_ckpt
    out, source = tmp_path / "adapters", str(tmp_path / "in.jsonl")
    ids, _ = write_input(source, sha, with_bad=False)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    complete = kill_midway(["batch-generate", source, "--checkpoint", ckpt_uri, "--out", str(out), "--batch-size", "2",
                            "--local"], out, tmp_path / "killed.log", env)
    # What a kill between a temp file's write and its rename leaves, in a folder not committed yet (the
    # kill above may or may not have landed there): the rerun must not complete the folder around it.
    pending = sorted(set(ids.values()) - complete)[0]
    (out / pending).mkdir(exist_ok=True)
    (out / pending / f".{adapters.META_FILE}.tmp-{'0' * 32}").write_text("{half")

    result = batch_generate(source, "--checkpoint", ckpt_uri, "--out", str(out), "--local")
    assert result.exit_code == 0, result.output
    assert folders(out) == set(ids.values())
    assert_no_stray_files(out)
    check_manifest(str(out), ids, {}, source)
    assert adapters.validate_adapter(str(out / pending)).ok
