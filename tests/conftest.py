"""Shared paths and fixtures. `../shared` beside the repo root holds real data and the golden files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"


def golden_json(name: str):
    return json.loads((GOLDEN / name).read_text())


def golden_npz(name: str):
    return np.load(GOLDEN / name, allow_pickle=False)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        raise FileNotFoundError(f"golden fixtures not found at {GOLDEN}: tests need ../shared beside the repo")
    return GOLDEN


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
