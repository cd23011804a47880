"""The storage URI layer: the same behaviour on a local folder, file:// URIs and a real S3 server."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from t2l_ray import storage


@pytest.fixture(params=["local", "file", pytest.param("s3", marks=pytest.mark.slow)])
def root(request, tmp_path) -> str:
    """A fresh, empty folder URI in each kind of store."""
    if request.param == "local":
        return str(tmp_path)
    if request.param == "file":
        return "file://" + str(tmp_path)
    return request.getfixturevalue("s3_server").uri(f"test-storage/{uuid.uuid4().hex}")


def _s3_settings(fs: pafs.S3FileSystem) -> dict:
    return fs.__reduce__()[1][0]


# --- resolve and join -------------------------------------------------------------------------


def test_resolve_local_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve("sub/file.bin")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "sub" / "file.bin")
    fs, path = storage.resolve("file:///data/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == "/data/x"
    assert storage.resolve("file://localhost/data/x")[1] == "/data/x"
    assert storage.resolve("FILE:///data/x")[1] == "/data/x"  # schemes are case-insensitive


def test_resolve_s3_uses_endpoint_and_credentials_from_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-a")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    fs, path = storage.resolve("s3://bucket/some/key/")
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bucket/some/key"
    settings = _s3_settings(fs)
    assert settings["endpoint_override"] == "127.0.0.1:8333"
    assert settings["scheme"] == "http"
    assert (settings["access_key"], settings["secret_key"], settings["region"]) == ("key-a", "secret-a", "us-east-1")

    # The S3-specific variable wins, and a changed environment gives a client with the new settings.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.com:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings = _s3_settings(storage.resolve("s3://bucket/k")[0])
    assert (settings["endpoint_override"], settings["scheme"]) == ("s3.example.com:9000", "https")
    assert settings["region"] == "eu-west-1"


@pytest.mark.parametrize("uri", ["ftp://host/x", "hdfs://", "S4://b/k"])
def test_resolve_unknown_scheme_names_the_uri(uri):
    with pytest.raises(ValueError, match=re.escape(uri)):
        storage.resolve(uri)


def test_resolve_refuses_uri_without_bucket():
    with pytest.raises(ValueError, match="s3://"):
        storage.resolve("s3://")


@pytest.mark.parametrize(
    ("uri", "parts", "expected"),
    [
        ("s3://bucket/runs/", ("a", "b/c.json"), "s3://bucket/runs/a/b/c.json"),
        ("s3://bucket", ("x",), "s3://bucket/x"),
        ("gs://bucket/p", ("./q", "r/"), "gs://bucket/p/q/r"),
        ("file:///data", ("x",), "file:///data/x"),
        ("file:///", ("x",), "file:///x"),
        ("/data/", ("x", "y"), "/data/x/y"),
        ("/", ("x",), "/x"),
        ("rel/dir", ("x",), "rel/dir/x"),
        ("s3://bucket/p", (), "s3://bucket/p"),
    ],
)
def test_join_keeps_scheme(uri, parts, expected):
    assert storage.join(uri, *parts) == expected


@pytest.mark.parametrize("part", ["..", "../x", "a/../b", "a/.."])
def test_join_refuses_parent_segments(part):
    with pytest.raises(ValueError, match=r"\.\."):
        storage.join("s3://bucket/p", part)


def test_join_allows_dots_inside_names():
    assert storage.join("/d", "a..b", "..c") == "/d/a..b/..c"


# --- round trips on every store ---------------------------------------------------------------


def test_round_trip(root):
    uri = storage.join(root, "nested", "blob.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00\x01payload")
    assert storage.exists(uri) and not storage.is_dir(uri)
    assert storage.is_dir(storage.join(root, "nested"))
    assert storage.read_bytes(uri) == b"\x00\x01payload"

    storage.write_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"second"

    text_uri = storage.join(root, "note.txt")
    storage.write_text(text_uri, "héllo ✓")
    assert storage.read_text(text_uri) == "héllo ✓"


def test_missing_read_raises_file_not_found_naming_the_uri(root):
    uri = storage.join(root, "absent", "adapter_config.json")
    with pytest.raises(FileNotFoundError) as info:
        storage.read_bytes(uri)
    assert info.value.filename == uri
    assert uri in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent"):
        storage.read_text(uri)


def test_list_dir(root):
    assert storage.list_dir(storage.join(root, "missing")) == []
    folder = storage.join(root, "folder")
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        storage.write_bytes(storage.join(folder, name), b"x")
    assert storage.list_dir(folder) == ["a.txt", "b.txt", "sub"]
    assert storage.list_dir(storage.join(folder, "sub")) == ["c.txt"]


def test_local_copy_of_a_file_and_a_flat_folder(root, tmp_path):
    folder = storage.join(root, "tasks")
    files = {"task1.json": b"one", "task2.json": b"two", "README.md": b"read me", ".task1.json.tmp-1": b"half",
             "sub/task3.json": b"nested"}
    for name, data in files.items():
        storage.write_bytes(storage.join(folder, name), data)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local_file = storage.local_copy(storage.join(folder, "task1.json"), str(scratch))
    local_folder = storage.local_copy(folder, str(scratch))
    json_only = storage.local_copy(folder, str(scratch), suffix=".json")
    assert Path(local_file).read_bytes() == b"one" and Path(local_file).name == "task1.json"
    if root.startswith("s3://"):  # copied, each call into a folder of its own under the scratch folder
        assert all(Path(p).is_relative_to(scratch) for p in (local_file, local_folder, json_only))
        assert len({Path(p).parent for p in (local_file, local_folder, json_only)}) == 3
        assert Path(local_folder).name == "tasks"
        assert sorted(p.name for p in Path(local_folder).iterdir()) == ["README.md", "task1.json", "task2.json"]
        assert sorted(p.name for p in Path(json_only).iterdir()) == ["task1.json", "task2.json"]
        assert Path(json_only, "task2.json").read_bytes() == b"two"
        with pytest.raises(FileNotFoundError, match="absent"):
            storage.local_copy(storage.join(root, "absent"), str(scratch))
    else:  # a local store is read where it is: nothing copied
        assert local_folder == json_only == storage.resolve(folder)[1]
        assert list(scratch.iterdir()) == []


def test_makedirs_then_write(root):
    folder = storage.join(root, "made", "deep")
    storage.makedirs(folder)
    assert storage.is_dir(folder)
    storage.write_bytes(storage.join(folder, "f"), b"1")
    assert storage.list_dir(folder) == ["f"]


def test_delete_file_folder_and_missing(root):
    folder = storage.join(root, "doomed")
    for name in ("a", "sub/b"):
        storage.write_bytes(storage.join(folder, name), b"x")
    storage.write_bytes(storage.join(root, "kept"), b"k")

    storage.delete(storage.join(folder, "a"))
    assert not storage.exists(storage.join(folder, "a"))
    assert storage.exists(storage.join(folder, "sub", "b"))

    storage.delete(folder)
    assert not storage.exists(folder)
    assert storage.list_dir(root) == ["kept"]

    storage.delete(folder)  # already gone: fine
    storage.delete(storage.join(root, "never-existed"))


# --- folders committed by a last file ---------------------------------------------------------

_FILES = {
    "adapter_config.json": b'{"r": 8}',
    "adapter_model.safetensors": b"weights" * 100,
    "extra/tokenizer.json": b"{}",
    "README.md": b"card",
}


def test_write_folder_writes_commit_file_last(root, monkeypatch):
    folder = storage.join(root, "adapter")
    commit = storage.join(folder, "adapter_config.json")
    others = [storage.join(folder, name) for name in _FILES if name != "adapter_config.json"]
    written = []
    real_write = storage.write_bytes

    def checked_write(uri, data):
        # Before every write: a visible commit file must mean every other file is already there.
        if storage.exists(commit):
            assert all(storage.exists(other) for other in others)
        written.append(uri)
        real_write(uri, data)

    monkeypatch.setattr(storage, "write_bytes", checked_write)
    storage.write_folder(folder, _FILES, commit_file="adapter_config.json")

    assert written[-1] == commit
    assert sorted(written[:-1]) == sorted(others)
    assert sorted(storage.list_dir(folder)) == sorted(["README.md", "adapter_config.json", "adapter_model.safetensors", "extra"])
    for name, data in _FILES.items():
        assert storage.read_bytes(storage.join(folder, name)) == data


class _CrashingFiles(Mapping):
    """A files mapping whose iteration dies after `survivors` files, like a writer killed midway."""

    def __init__(self, files: dict[str, bytes], survivors: int):
        self._files, self._survivors = files, survivors

    def __getitem__(self, name: str) -> bytes:
        return self._files[name]

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[str]:
        for i, name in enumerate(self._files):
            if i == self._survivors:
                raise RuntimeError("writer died")
            yield name


def test_write_folder_crash_midway_leaves_no_commit_file(root):
    folder = storage.join(root, "adapter")
    with pytest.raises(RuntimeError, match="writer died"):
        storage.write_folder(folder, _CrashingFiles(_FILES, survivors=3), commit_file="adapter_config.json")
    assert storage.exists(storage.join(folder, "adapter_model.safetensors"))  # the crash really was midway
    assert not storage.exists(storage.join(folder, "adapter_config.json"))


def test_rewriting_a_committed_folder_uncommits_it_first(root):
    folder = storage.join(root, "adapter")
    storage.write_folder(folder, _FILES, commit_file="adapter_config.json")
    new_files = {name: data + b"-v2" for name, data in _FILES.items()}
    with pytest.raises(RuntimeError, match="writer died"):
        storage.write_folder(folder, _CrashingFiles(new_files, survivors=2), commit_file="adapter_config.json")
    # Half old, half new: the old commit file must not vouch for it.
    assert storage.read_bytes(storage.join(folder, "adapter_model.safetensors")).endswith(b"-v2")
    assert not storage.exists(storage.join(folder, "adapter_config.json"))


def test_write_folder_requires_the_commit_file(root):
    with pytest.raises(ValueError, match="adapter_config.json"):
        storage.write_folder(storage.join(root, "a"), {"x": b"1"}, commit_file="adapter_config.json")
    assert storage.list_dir(root) == []


def test_write_folder_refuses_escaping_names(root):
    with pytest.raises(ValueError, match=r"\.\."):
        storage.write_folder(storage.join(root, "a"), {"../evil": b"1", "c": b"2"}, commit_file="c")
    assert not storage.exists(storage.join(root, "evil"))


def test_write_from_several_buffers_without_joining(root):
    import numpy as np

    rows = np.arange(12, dtype=np.uint8).reshape(3, 4)
    uri = storage.join(root, "a", "weights.bin")
    storage.write_bytes(uri, (b"head", rows[1], memoryview(b"tail")))  # a row of a batch buffer, as is
    assert storage.read_bytes(uri) == b"head" + bytes([4, 5, 6, 7]) + b"tail"
    assert storage.sha256(uri) == __import__("hashlib").sha256(storage.read_bytes(uri)).hexdigest()


def test_check_writable_folder(root):
    target = storage.join(root, "new", "out")
    storage.check_writable_folder(target)
    assert [n for n in storage.list_dir(target) if n.startswith(".write-check")] == []  # the probe is gone
    blocker = storage.join(root, "taken")
    storage.write_bytes(blocker, b"keep me")
    with pytest.raises(ValueError, match=re.escape(f"{blocker} is a file, not a folder")):
        storage.check_writable_folder(blocker)
    assert storage.read_bytes(blocker) == b"keep me"


# --- local atomicity --------------------------------------------------------------------------


def test_atomic_local_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "model.safetensors"
    for i in range(5):
        storage.write_bytes(str(target), b"v%d" % i)
    assert os.listdir(target.parent) == ["model.safetensors"]
    assert target.read_bytes() == b"v4"


def test_failed_local_write_keeps_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "model.safetensors"
    storage.write_bytes(str(target), b"old")
    with pytest.raises(TypeError):
        storage.write_bytes(str(target), object())  # fails after the temp file was opened
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_write_folder_removes_what_a_killed_write_left(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in (f".adapter_model.safetensors.tmp-{'a' * 32}", f".adapter_config.json.tmp-{'b' * 32}"):
        (folder / name).write_bytes(b"half")
    (folder / ".hidden.tmp-not-ours").write_bytes(b"someone else's")
    storage.write_folder(str(folder), _FILES, commit_file="adapter_config.json")
    assert sorted(os.listdir(folder)) == sorted([".hidden.tmp-not-ours", "README.md", "adapter_config.json",
                                                 "adapter_model.safetensors", "extra"])


def test_write_bytes_under_a_file_names_the_reason(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a writable folder: Not a directory"):
        storage.check_writable_folder(str(tmp_path / "f" / "below"))


# --- S3 only ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_s3_delete_refuses_whole_bucket(s3_server):
    storage.write_bytes(s3_server.uri("keep/me"), b"x")
    with pytest.raises(ValueError, match="bucket"):
        storage.delete(f"s3://{s3_server.bucket}")
    assert storage.read_bytes(s3_server.uri("keep/me")) == b"x"


@pytest.mark.slow
def test_s3_server_sets_env_for_the_session(s3_server):
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint
    assert os.environ["AWS_REGION"] == "us-east-1"
    assert s3_server.uri("a/b") == f"s3://{s3_server.bucket}/a/b"
    settings = _s3_settings(storage.resolve(s3_server.uri("x"))[0])
    assert f"{settings['scheme']}://{settings['endpoint_override']}" == s3_server.endpoint
