"""The factory's manifest (t2l_ray/manifest.py): one row per input line, newest row wins, runs only add files."""

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
