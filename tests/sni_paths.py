"""Where the real SNI task files are: `T2L_SNI_DIR`, else `shared/data/sni` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HOW_TO_GET_SNI = (
    "SNI task files not found. Clone github.com/allenai/natural-instructions and set "
    "T2L_SNI_DIR to its tasks/ folder (or to a folder holding the shared SNI slice)."
)


def _shared_sni_dir() -> Path | None:
    """The first `shared/data/sni` found walking up from this file."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "shared" / "data" / "sni"
        if (folder / "shared").is_dir() and candidate.is_dir():
            return candidate
    return None


def sni_dir() -> Path:
    """The SNI folder for tests, or a pytest skip saying how to get one."""
    configured = os.environ.get("T2L_SNI_DIR")
    folder = Path(configured) if configured else _shared_sni_dir()
    if folder is None or not any(folder.glob("task*.json")):
        pytest.skip(f"{HOW_TO_GET_SNI} (looked in {folder or 'shared/data/sni above ' + str(Path(__file__).parent)})")
    return folder


def sni_descriptions_file() -> Path:
    """The shared `descriptions.json` beside the SNI files, or a skip."""
    path = sni_dir() / "descriptions.json"
    if not path.is_file():
        pytest.skip(f"no descriptions.json in {path.parent}")
    return path
