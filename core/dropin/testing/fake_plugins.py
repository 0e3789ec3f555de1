"""Plugins installed the way pip installs them, without pip: a distribution's dist-info with its
entry points in group "dropin", and its modules, written into a directory that goes on the server's
PYTHONPATH. The server then finds and loads them like any installed plugin."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_fake_distribution(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write a minimal installed distribution (dist-info with entry points) into `site`."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[dropin]\n{lines}\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


#: a plugin module registering backend "slow": it claims a version directory holding slow.txt, and
#: its model, FP32 x [-1, 2] -> y = x * 2, sleeps the seconds written in slow.txt before answering
SLOW_PLUGIN = '''
import asyncio
from dropin.backend import Backend, LoadedModel
from dropin.dtypes import DType
from dropin.hookspecs import hookimpl
from dropin.shapes import TensorSpec

class SlowModel(LoadedModel):
    inputs = {"x": TensorSpec.of("x", DType.FP32, [-1, 2])}
    outputs = {"y": TensorSpec.of("y", DType.FP32, [-1, 2])}

    def __init__(self, seconds):
        self.seconds = seconds

    async def infer(self, inputs):
        await asyncio.sleep(self.seconds)
        return {"y": inputs["x"] * 2}

class SlowBackend(Backend):
    @classmethod
    def claims(cls, version_dir):
        return (version_dir / "slow.txt").exists()

    def load(self, version_dir, options):
        return SlowModel(float((version_dir / "slow.txt").read_text()))

@hookimpl
def dropin_register_backends(registry):
    registry.add("slow", SlowBackend)
'''
