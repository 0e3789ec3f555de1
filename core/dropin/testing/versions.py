"""Versions of the numpy `scale_model` rolled out as deployment tools do, and the factor a server
answers with: the repository tests tell versions apart by their factor."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from . import numpy_models
from .client import outputs_of, predict_request
from .server import DropinServer

X = np.ones((1, 2), np.float32)


def make_version(repo: Path, number: int, factor: float, staging: Path) -> Path:
    """Build a version in a staging directory and rename it into place, as deployment tools do."""
    staged = staging / f"{repo.name}-{number}-{time.monotonic_ns()}"
    numpy_models.scale_model(staged, shape=(-1, 2), factor=factor)
    target = repo / str(number)
    os.rename(staged, target)
    return target


def served_factor(server: DropinServer, name: str = "m", version: int = 0) -> float:
    """The factor of the version that answers Predict (0: the default version)."""
    response = server.predict.Predict(predict_request(name, {"x": X}, version=version), timeout=20)
    return float(outputs_of(response)["y"][0, 0])
