"""A temporary model repository that changes the way deployments change a real one."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


class ModelRepository:
    """`<path>/<model>/<version>/` directories, plus a staging directory beside `path` (same file
    system) so that versions appear whole, by a rename, as deployment tools make them appear.

        repo.add("m", 1, lambda d: write_my_model(d))   # builds in staging, renames into place
        repo.remove("m", 1)                             # renames away, then deletes
        repo.write_config([{"name": "m", "base_path": "m", "backend": "mine"}])
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.staging = self.path.parent / f".{self.path.name}-staging"
        self.staging.mkdir(exist_ok=True)

    def model(self, name: str) -> Path:
        """A model's base path (created if missing)."""
        base = self.path / name
        base.mkdir(parents=True, exist_ok=True)
        return base

    def version(self, name: str, number: int) -> Path:
        """Where version `number` of `name` lives (it may not exist)."""
        return self.path / name / str(number)

    def add(self, name: str, number: int, write: Callable[[Path], object]) -> Path:
        """Let `write(directory)` fill a new empty directory, then rename it into place as version
        `number` of `name`. Returns the version directory."""
        staged = self.staging / f"{name}-{number}-{time.monotonic_ns()}"
        staged.mkdir()
        write(staged)
        target = self.version(name, number)
        self.model(name)
        os.rename(staged, target)
        return target

    def remove(self, name: str, number: int) -> None:
        """Take version `number` of `name` away at once (rename out, then delete)."""
        gone = self.staging / f"gone-{name}-{number}-{time.monotonic_ns()}"
        os.rename(self.version(name, number), gone)
        shutil.rmtree(gone)

    def write_config(self, models: Sequence[Mapping[str, Any]], filename: str = "config.json") -> Path:
        """Write OVMS's config.json listing `models` (each a `config` object; `base_path` may be
        relative to the repository), atomically. Returns its path."""
        path = self.path / filename
        staged = self.staging / f"{filename}-{time.monotonic_ns()}"
        staged.write_text(json.dumps({"model_config_list": [{"config": dict(m)} for m in models]}, indent=1))
        os.replace(staged, path)
        return path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)
