"""One URI layer over pyarrow.fs: local paths, file://, s3:// and gs:// behave the same to callers.

Everything that reads or writes artifacts (adapters, checkpoints, datasets) goes through here, so a
run can move from a laptop folder to a bucket by changing a URI. S3-compatible stores (SeaweedFS in
tests, MinIO, R2) are reached through the standard `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`
variables; set them before `ray.init` so Ray workers inherit them.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")  # a temp sibling of `write_bytes`
_HASH_CHUNK = 8 << 20

Data = bytes | bytearray | memoryview
"""Bytes, or any object with the buffer protocol (a numpy slice, a memoryview): written without a copy."""


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, key: str | None, secret: str | None, token: str | None, region: str):
    # Cached per settings so repeated calls reuse one client and its connection pool, while a
    # changed environment (another endpoint or key) still gets a fresh client.
    kwargs = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs = {"endpoint_override": parts.netloc, "scheme": parts.scheme}
    return pafs.S3FileSystem(access_key=key, secret_key=secret, session_token=token, region=region, **kwargs)


@functools.lru_cache(maxsize=1)
def _gcs():
    return pafs.GcsFileSystem()


def _split(uri: str) -> tuple[str | None, str]:
    """(scheme or None for a plain local path, the rest after `scheme://`)."""
    match = _SCHEME.match(uri)
    if match is None:
        return None, uri
    return match.group(1).lower(), uri[match.end():]


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem that holds `uri` and the path to pass to it (absolute for local, `bucket/key` otherwise)."""
    scheme, rest = _split(uri)
    if scheme is None:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"file URI with a remote host is not supported: {uri!r}")
        return pafs.LocalFileSystem(), os.path.abspath("/" + path)
    if scheme not in ("s3", "gs", "gcs"):
        raise ValueError(f"unsupported storage scheme {scheme!r} in {uri!r} (use a local path, file://, s3:// or gs://)")
    path = rest.strip("/")
    if not path:
        raise ValueError(f"URI names no bucket: {uri!r}")
    if scheme != "s3":
        return _gcs(), path
    env = os.environ.get
    fs = _s3(
        env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY"),
        env("AWS_SESSION_TOKEN"),
        env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1",
    )
    return fs, path


def join(uri: str, *parts: str) -> str:
    """`uri` extended by relative `parts` (which may contain `/`), keeping its scheme; `..` is refused."""
    segments = []
    for part in parts:
        for segment in part.split("/"):
            if segment == "..":
                raise ValueError(f"'..' is not allowed in a storage path part: {part!r}")
            if segment not in ("", "."):
                segments.append(segment)
    if not segments:
        return uri
    _, rest = _split(uri)
    base = uri[: len(uri) - len(rest)] + rest.rstrip("/")
    return base + "/" + "/".join(segments)


def _is_object_store(fs: pafs.FileSystem) -> bool:
    return not isinstance(fs, pafs.LocalFileSystem)


def _info(uri: str) -> pafs.FileInfo:
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str) -> bool:
    return _info(uri).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    """True for a folder; on object stores, for any prefix that has objects under it."""
    return _info(uri).type == pafs.FileType.Directory


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as e:
        # pyarrow names the bare path; callers need the URI they asked for.
        raise FileNotFoundError(errno.ENOENT, "No such file or object", uri) from e


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def _parts(data: Data | Sequence[Data]) -> tuple[Data, ...]:
    """One buffer or several, as a tuple of buffers (a safetensors header and a slice of a batch buffer)."""
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "__array_interface__"):
        return (data,)
    if not isinstance(data, Sequence):
        raise TypeError(f"expected bytes or a sequence of buffers, not {type(data).__name__}")
    return tuple(data)


def write_bytes(uri: str, data: Data | Sequence[Data]) -> None:
    """Write one file atomically: readers see the old content or the new, never a partial file.

    `data` may be several buffers, written one after the other without joining them. Object stores
    publish an object only when its upload completes. Locally the bytes go to a hidden temp sibling
    (`.name.tmp-<uuid>`) that is fsynced and renamed over the target, so a killed process leaves at most a
    stray temp file, never a half-written one under the real name (`write_folder` removes such strays).
    """
    parts = _parts(data)
    fs, path = resolve(uri)
    if _is_object_store(fs):
        with fs.open_output_stream(path) as stream:
            for part in parts:
                stream.write(part)
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_folder(uri: str, files: Mapping[str, Data | Sequence[Data]], commit_file: str) -> None:
    """Write a folder of files so that the presence of `commit_file` means the folder is complete.

    Contract: any old `commit_file` is deleted first, then the temp files a killed writer left behind in the
    folder, every other file is written next, and `commit_file` is written last (each write atomic).
    A reader that only trusts folders holding `commit_file` therefore never sees a half-written or
    half-replaced folder, even if the writer dies midway, and a folder completed by a later write holds no
    strays. Adapter folders are committed this way with `adapter_config.json` as the commit file.
    """
    if commit_file not in files:
        raise ValueError(f"commit file {commit_file!r} is not among the files to write to {uri!r}")
    delete(join(uri, commit_file))
    remove_stray_temp_files(uri)
    for name, data in files.items():
        if name != commit_file:
            write_bytes(join(uri, name), data)
    write_bytes(join(uri, commit_file), files[commit_file])


def remove_stray_temp_files(uri: str) -> list[str]:
    """Delete the temp files (`.NAME.tmp-<uuid>`) a killed `write_bytes` left in a local folder; returns their
    names. Object stores have none: an upload is published whole or not at all."""
    fs, _ = resolve(uri)
    if _is_object_store(fs):
        return []
    stray = [n for n in list_dir(uri) if _TEMP_NAME.match(n)]
    for name in stray:
        delete(join(uri, name))
    return stray


def is_temp_name(name: str) -> bool:
    """Whether `name` looks like a temp file of `write_bytes`."""
    return _TEMP_NAME.match(name) is not None


def sha256(uri: str) -> str:
    """The sha256 of a file, read in chunks (a checkpoint's weights need not fit in memory twice)."""
    fs, path = resolve(uri)
    digest = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, "No such file or object", uri) from e
    return digest.hexdigest()


def check_writable_folder(uri: str) -> None:
    """Make sure `uri` is, or can become, a folder this process can write to: a probe file is written in it
    and deleted. Raises ValueError naming `uri` and the reason (a regular file, no permission, no bucket)."""
    if _info(uri).type == pafs.FileType.File:
        raise ValueError(f"{uri} is a file, not a folder")
    probe = join(uri, f".write-check-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"")
        delete(probe)
    except OSError as error:  # pyarrow raises OSError for store errors too
        reason = error.strerror or str(error)
        raise ValueError(f"{uri} is not a writable folder: {reason}") from None


def list_dir(uri: str) -> list[str]:
    """Sorted names of the direct children of a folder; empty when the folder does not exist."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def makedirs(uri: str) -> None:
    """Create a folder and its parents. Object stores need none (prefixes are implicit); this adds a marker."""
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def delete(uri: str) -> None:
    """Delete a file or a whole folder; a missing one is fine. A bucket itself is never deleted."""
    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        if _is_object_store(fs) and "/" not in path:
            raise ValueError(f"refusing to delete a whole bucket: {uri!r}")
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def local_copy(uri: str, scratch: str, suffix: str = "") -> str:
    """A local path for a file or a flat folder that a library reads from disk (task files, a tokenizer, an adapter).

    A local `uri` is its own path: nothing is copied. Otherwise it is copied into a new folder under `scratch`
    (which must exist), under its own name: the file, or the folder's files whose names end in `suffix`
    (subfolders and hidden files, such as another writer's temp files, are left out). Every call copies into a
    folder of its own, so two URIs with the same name never overwrite each other.
    """
    fs, path = resolve(uri)
    if not _is_object_store(fs):
        return path
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(errno.ENOENT, "No such file or object", uri)
    target = Path(tempfile.mkdtemp(prefix="copy-", dir=scratch), PurePosixPath(path).name)
    if kind == pafs.FileType.File:
        target.write_bytes(read_bytes(uri))
        return str(target)
    target.mkdir()
    for entry in fs.get_file_info(pafs.FileSelector(path)):
        name = entry.base_name
        if entry.type == pafs.FileType.File and name.endswith(suffix) and not name.startswith("."):
            target.joinpath(name).write_bytes(read_bytes(join(uri, name)))
    return str(target)
