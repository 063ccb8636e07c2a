"""Measured figures shared between the serving notebooks.

Each notebook records what it measured; the chapter's last notebook prints
them together. The file lives in the data folder, outside git, because the
numbers depend on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.data import default_data_root


def figures_path() -> Path:
    """Return ``<data root>/serving/figures.json``."""
    return default_data_root() / "serving" / "figures.json"


def record_figure(name: str, value: Any) -> None:
    """Store ``value`` (JSON-serialisable) under ``name``, replacing an older value."""
    path = figures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = read_figures()
    figures[name] = value
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(figures, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def read_figures() -> dict[str, Any]:
    """Return all recorded figures, or an empty dict when none were recorded."""
    path = figures_path()
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
