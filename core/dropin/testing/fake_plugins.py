"""Plugins installed the way pip installs them, without pip: a distribution's dist-info with its
entry points in group "dropin", and its modules, written into a directory that goes on the server's
PYTHONPATH. The server then finds and loads them like any installed plugin."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from pathlib import Path


def install_from_pyproject(src: Path, site: Path) -> str:
    """Install the project in `src` into `site` the way pip would lay it out: its packages, and a
    dist-info with the entry points its pyproject.toml declares. Returns the distribution name."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the backport, installed with pytest
        import tomli as tomllib  # type: ignore[import-not-found]

    project = tomllib.loads((src / "pyproject.toml").read_text())
    meta = project["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    groups = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in meta.get("entry-points", {}).items()
    )
    (info / "entry_points.txt").write_text(groups)
    for package in project["tool"]["setuptools"]["packages"]:
        shutil.copytree(src / package, site / package)
    return str(meta["name"])


def guide_files(guide: Path, marker: str) -> dict[str, str]:
    """The files of an example in a Markdown guide: each code block right after a line
    `<!-- {marker}: path -->`, by path."""
    block = re.compile(rf"^<!-- {re.escape(marker)}: (\S+) -->\n```[\w-]*\n(.*?)^```$", re.S | re.M)
    return dict(block.findall(guide.read_text()))


def install_guide_example(guide: Path, marker: str, root: Path) -> tuple[Path, Path, str]:
    """Write the guide's example (`guide_files`) under `root`/src and install it into `root`/site:
    (the source tree, the site directory, the distribution's name)."""
    src, site = root / "src", root / "site"
    for path, body in guide_files(guide, marker).items():
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    return src, site, install_from_pyproject(src, site)


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
