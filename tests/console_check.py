"""Framework log records in a command's console output: none may reach the console without --verbose.

    python tests/console_check.py CONSOLE.txt     (CI runs it on `make demo`'s console; exit 1 on any record)

The patterns are the shapes these records take: Ray's forwarded worker lines and its driver log format,
glog lines from Ray's C++ core, DeepSpeed's records, Python warnings (and the source line printed under
them), Ray Data's notices, transformers' progress bars.
"""

from __future__ import annotations

import re
import sys

RECORDS = [
    (re.compile(r"\(.* pid=\d+(?:, ip=[\d.]+)?\)"), "a Ray worker's forwarded line"),
    (re.compile(r"\((?:raylet|autoscaler|gcs_server)[^)]*\)"), "a Ray daemon's forwarded line"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s"),
     "a Python logging record in Ray's format"),
    (re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ [DIWEF] \d+ \d+\]"), "a glog record from Ray's C++ core"),
    (re.compile(r"\[(?:DEBUG|INFO|WARNING|ERROR)\]\s*\[[\w./-]+:\d+:"), "a DeepSpeed record"),
    (re.compile(r"\b[A-Z]\w*Warning: "), "a Python warning"),
    (re.compile(r"^\s*(?:warnings\.warn\(|return func\(\*args)"), "the source line under a Python warning"),
    (re.compile(r"core_worker\.cc|Progress bars disabled|Full logs are in /"), "a Ray or Ray Data notice"),
    (re.compile(r"(?:Loading weights|Writing model shards|Loading checkpoint shards):"), "a transformers progress bar"),
]


def framework_records(text: str) -> list[tuple[int, str, str]]:
    """(line number, line, what it is) for every line of `text` that is a framework's log record."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in RECORDS:
            if pattern.search(line):
                found.append((number, line, what))
                break
    return found


def main(path: str) -> int:
    with open(path, encoding="utf-8", errors="replace") as f:
        found = framework_records(f.read())
    for number, line, what in found:
        print(f"{path}:{number}: {what}: {line[:160]}", file=sys.stderr)
    if found:
        print(f"{len(found)} framework log records on the console (they belong in the log file)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
