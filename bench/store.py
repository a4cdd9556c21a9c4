"""Where results live and how a suite's JSON document looks (bench/results/<suite>.json)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from softkvm.hw.native import core_build

RESULTS = Path(__file__).resolve().parent / "results"


def document(name: str, body: dict[str, object]) -> dict[str, object]:
    """A suite's document: its name, when, where, then ``body``."""
    return {"suite": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host": platform.platform(), "python": sys.version.split()[0], "core": core_build(),
            **body}


def write_json(name: str, doc: dict[str, object], results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load(name: str, results: Path = RESULTS) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
