"""The factory's manifest (t2l_ray/manifest.py): one row per input line, newest row wins, runs only add files."""

import json
from pathlib import Path

import pytest

from t2l_ray import manifest


def test_manifest_newest_row_wins_and_parts_roll_over(tmp_path, monkeypatch):
    out = str(tmp_path)
    first = manifest.ManifestWriter(out)
    for line in (1, 2):
        first.add(manifest.manifest_row(line, "failed", error="boom"))
    first.flush()
    monkeypatch.setattr(manifest, "ROWS_PER_FILE", 2)
    second = manifest.ManifestWriter(out)
    for line in (2, 3, 4):
        second.add(manifest.manifest_row(line, "written", id=f"a{line}", uri="u", bytes=1, sha256="s"))
    second.flush()
    assert [Path(u).name[-10:] for u in second.uris] == ["0000.jsonl", "0001.jsonl"]
    assert len(manifest.manifest_files(out)) == 3
    latest = manifest.latest_by_line(out)
    assert {line: row["status"] for line, row in latest.items()} == {1: "failed", 2: "written", 3: "written", 4: "written"}
    with pytest.raises(ValueError, match="status must be one of"):
        manifest.manifest_row(1, "done")


def written(out: str) -> list[list[int]]:
    """The line numbers in each manifest file under `out`, file by file."""
    return [[json.loads(text)["line"] for text in Path(uri).read_text().splitlines()] for uri in manifest.manifest_files(out)]


def test_rows_wait_for_the_flush_interval_or_an_explicit_flush(tmp_path):
    out = str(tmp_path)
    writer = manifest.ManifestWriter(out, flush_every=3600)
    writer.add(manifest.manifest_row(1, "written", id="a"))
    assert written(out) == []  # within the interval: nothing on disk yet
    writer.flush()
    writer.flush()  # nothing new: the file is not rewritten or duplicated
    assert written(out) == [[1]]
    eager = manifest.ManifestWriter(out, flush_every=0)
    eager.add(manifest.manifest_row(2, "skipped", id="b"))
    assert written(out) == [[1], [2]]  # each run writes its own file, the older run's first


def test_a_flush_rewrites_the_runs_current_file_whole(tmp_path):
    out = str(tmp_path)
    writer = manifest.ManifestWriter(out, flush_every=0)
    for line in (1, 2, 3):
        writer.add(manifest.manifest_row(line, "written", id=f"a{line}"))
    assert written(out) == [[1, 2, 3]] and len(writer.uris) == 1


def test_an_empty_run_writes_no_file(tmp_path):
    manifest.ManifestWriter(str(tmp_path)).flush()
    assert manifest.manifest_files(str(tmp_path)) == [] and manifest.read_rows(str(tmp_path)) == []


def test_only_run_files_are_read(tmp_path):
    """A killed write's hidden temp file and unrelated files in the folder are not manifest files."""
    out = str(tmp_path)
    writer = manifest.ManifestWriter(out)
    writer.add(manifest.manifest_row(1, "failed", error="boom"))
    writer.flush()
    folder = tmp_path / manifest.MANIFEST_DIR
    (folder / f".{Path(writer.uris[0]).name}.tmp-{'0' * 32}").write_text("{half a row")  # as storage.write_bytes names one
    (folder / "notes.txt").write_text("not a manifest")
    assert manifest.manifest_files(out) == writer.uris
    assert manifest.latest_by_line(out) == {1: manifest.manifest_row(1, "failed", error="boom")}


def test_a_damaged_row_is_reported_with_its_file_and_line(tmp_path):
    out = str(tmp_path)
    writer = manifest.ManifestWriter(out)
    writer.add(manifest.manifest_row(1, "written", id="a"))
    writer.flush()
    with open(writer.uris[0], "a") as sink:
        sink.write("{cut off\n")
    with pytest.raises(ValueError, match=rf"{writer.uris[0]}:2: not a manifest row"):
        manifest.read_rows(out)
