"""What a command shows: its own progress, metric lines and summary; framework output goes to a log file.

Ray, Ray Data, Ray Train, Serve, DeepSpeed and transformers write to the process's stdout and stderr, from
Python and from C++ (Ray's core worker), and Ray forwards every worker's output there too. While a command
runs, `capture` points file descriptors 1 and 2 and `sys.stdout`/`sys.stderr` at `t2l-ray.log` in a folder
of the run or output (a remote folder gets a local file, uploaded when the command ends), so all of that
lands in the file. The command writes to the terminal through the `Console`, which holds the original
streams: `echo` for lines, `progress` for a bar (a tqdm bar on a terminal, a plain line every few seconds
otherwise). An error the command did not expect becomes one line naming the log file, which holds its
traceback. `--verbose` leaves everything on the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator

import typer

LOG_FILE = "t2l-ray.log"
PLAIN_EVERY_S = 10.0

VerboseOption = typer.Option(False, "--verbose", help="Show Ray, DeepSpeed and transformers logs here instead of "
                                                       "writing them to the log file.")

_active: Console | None = None


def echo(text: str = "", err: bool = False) -> None:
    """A line of the command's own output: through the active console, else straight to the terminal."""
    if _active is not None:
        _active.echo(text, err=err)
    else:
        typer.echo(text, err=err)


class Progress:
    """One progress display. On a terminal, a tqdm bar; elsewhere, a plain status line whenever nothing else
    was printed for `PLAIN_EVERY_S` seconds (twice as long after each line that reports no progress). Rate and ETA count from the first `set`/`update`: start-up (a
    cluster starting, models loading) is not progress, and counting it makes the first estimates hours long.
    `skip` moves the position without starting the clock (items done without work: adapters already made)."""

    def __init__(self, stream, desc: str, unit: str, total: int | None, tty: bool):
        self.stream, self.desc, self.unit, self.total, self.tty = stream, desc, unit, total, tty
        self.n, self.first, self.postfix, self.created = 0, None, {}, time.monotonic()
        self.lock = threading.Lock()
        self.last_line, self.quiet_for, self.reported = self.created, PLAIN_EVERY_S, -1
        self.bar = None
        self.stop = threading.Event()
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
        else:
            threading.Thread(target=self._heartbeat, daemon=True).start()

    def reset(self, total: int | None) -> None:
        with self.lock:
            self.total = total
            if self.bar is not None:
                self.bar.reset(total=total)

    def set(self, n: int, **postfix) -> None:
        """Move to position `n` (for example the step a metrics row reports); the first call starts the clock."""
        with self.lock:
            if self.first is None:
                self.first = (time.monotonic(), n)
                if self.bar is not None:  # restart tqdm's clock here, its rate counting from n
                    self.bar.reset(total=self.total)
                    self.bar.initial = n
            self._move(n, postfix)

    def update(self, k: int = 1, **postfix) -> None:
        self.set(self.n + k, **postfix)

    def skip(self, k: int = 1) -> None:
        with self.lock:
            self._move(self.n + k, {})

    def _move(self, n: int, postfix: dict) -> None:
        self.n = n
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.n = n
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.refresh()

    def write(self, line: str) -> None:
        """A line above the bar (or between plain status lines)."""
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()
            self.last_line = time.monotonic()

    def status(self) -> str:
        done = f"{self.n:,}/{self.total:,} {self.unit}s ({100 * self.n / self.total:.0f}%)" if self.total else \
            f"{self.n:,} {self.unit}s"
        parts = [f"{self.desc}: {done}"]
        if self.first is not None and self.n > self.first[1]:
            rate = (self.n - self.first[1]) / max(time.monotonic() - self.first[0], 1e-9)
            parts.append(f"{rate:.2f} {self.unit}s/s")
            if self.total:
                parts.append(f"eta {(self.total - self.n) / rate:.0f} s")
        else:
            parts.append(f"starting ({time.monotonic() - self.created:.0f} s)")
        parts += [f"{key} {value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _heartbeat(self) -> None:
        while not self.stop.wait(1.0):
            self.beat()

    def beat(self) -> None:
        """A status line when nothing was printed for the quiet spell (plain displays, once a second)."""
        if time.monotonic() - self.last_line >= self.quiet_for:
            self.quiet_for = PLAIN_EVERY_S if self.n != self.reported else 2 * self.quiet_for
            self.reported = self.n
            self.write(self.status())

    def close(self) -> None:
        """Stop the display; the command's summary follows (a plain display adds no last status line)."""
        self.stop.set()
        if self.bar is not None:
            self.bar.close()


class Console:
    """The terminal streams of a command (the originals, while `capture` sends the process's own elsewhere)."""

    def __init__(self, out, err, log: str | None = None):
        self.out, self.err, self.log = out, err, log

    def echo(self, text: str = "", err: bool = False) -> None:
        stream = self.err if err else self.out
        stream.write(text + "\n")
        stream.flush()

    def progress(self, desc: str, unit: str, total: int | None = None) -> Progress:
        """A progress display on the command's output stream, between its own lines."""
        isatty = getattr(self.out, "isatty", None)
        return Progress(self.out, desc, unit, total, tty=bool(isatty and isatty()))


def log_location(folder: str) -> str:
    from t2l_ray import storage

    return storage.join(folder, LOG_FILE)


@contextlib.contextmanager
def capture(folder: str, verbose: bool = False) -> Iterator[Console]:
    """Run a command with the process's output going to `folder/t2l-ray.log` (appended), unless `verbose`.

    Yields the Console the command writes to. An unexpected exception is written to the log file with its
    traceback and shown as one line; `typer.Exit` passes through."""
    global _active
    if verbose:
        _active = Console(sys.stdout, sys.stderr)
        try:
            yield _active
        finally:
            _active = None
        return
    from t2l_ray import storage

    uri = log_location(folder)
    fs, path = storage.resolve(uri)
    local = path if fs.type_name == "local" else os.path.join(tempfile.mkdtemp(prefix="t2l-log-"), LOG_FILE)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    if local != path and storage.exists(uri):
        with open(local, "wb") as f:
            f.write(storage.read_bytes(uri))
    log = open(local, "a", buffering=1, encoding="utf-8")
    log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} t2l-ray {' '.join(sys.argv[1:])}\n")
    console, restore = _redirect(log)
    console.log = uri
    _active = console
    own = logging.getLogger("t2l_ray")  # the library's warnings are the command's own: shown here
    shown = _ConsoleWarnings(console)
    own.addHandler(shown)
    try:
        yield console
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        console.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001 - shown as one line, the traceback goes to the log
        log.write(traceback.format_exc())
        console.echo(f"error: {type(error).__name__}: {error} (traceback in {uri})", err=True)
        raise typer.Exit(1) from None
    finally:
        from t2l_ray.raycluster import shutdown_if_started_here

        shutdown_if_started_here()  # Ray's forwarded worker lines keep coming until then: into the log
        own.removeHandler(shown)
        _active = None
        restore()
        log.close()
        if local != path:
            with open(local, "rb") as f:
                storage.write_bytes(uri, f.read())


class _ConsoleWarnings(logging.Handler):
    def __init__(self, console: Console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.echo(f"warning: {record.getMessage()}", err=True)


def _redirect(log) -> tuple[Console, callable]:
    """Point fds 1 and 2 and sys.stdout/sys.stderr at `log`; the Console gets the originals."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_streams = sys.stdout, sys.stderr
    saved_fds = {}
    for fd in (1, 2):
        try:
            saved_fds[fd] = os.dup(fd)
        except OSError:
            pass
    if _real_fd(sys.stdout) == 1 and _real_fd(sys.stderr) == 2:  # a terminal, a pipe or a file: keep copies of them
        out = open(os.dup(saved_fds[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        err = open(os.dup(saved_fds[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    else:  # streams that are not the process's fds (a test runner's): write to them as they are
        out, err = saved_streams
    for fd in saved_fds:
        os.dup2(log.fileno(), fd)
    sys.stdout = sys.stderr = log

    def restore() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(ValueError):
                stream.flush()
        for fd, copy in saved_fds.items():
            os.dup2(copy, fd)
            os.close(copy)
        sys.stdout, sys.stderr = saved_streams
        for stream in (out, err):
            if stream not in saved_streams:
                stream.close()

    return Console(out, err), restore


def _real_fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None
