"""The OpenVINO plugin's server-wide flags, OVMS's: `--cache_dir` and `--cpu_extension`.

Declared through `dropin_declare_vocabulary` (plugin.py), so a deployment without this plugin
does not know them (argparse refuses them: without OpenVINO they have no meaning). Their values
arrive through `dropin_configure` before any backend is made; `OpenVINOBackend` reads them when
it makes its Core and compiles models.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("dropin.openvino")

#: OVMS's default cache directory on Linux: used when it exists and --cache_dir is not given
DEFAULT_CACHE_DIR = Path("/opt/cache")


@dataclass
class ServerOptions:
    cache_dir: str | None = None  # OpenVINO's model cache (CACHE_DIR) for models that allow it
    cpu_extension: str | None = None  # a library of custom operations for the Core (add_extension)


#: what dropin_configure set, read by every OpenVINOBackend
current = ServerOptions()


def configure(options: Mapping[str, Any]) -> None:
    """Keep the flags' values; ValueError (a start-up error naming the flag) for a missing file."""
    cache_dir = options.get("cache_dir")
    if not cache_dir and DEFAULT_CACHE_DIR.is_dir():
        cache_dir = str(DEFAULT_CACHE_DIR)
    if cache_dir:
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--cache_dir {cache_dir}: cannot create the directory: {exc.strerror or exc}") from None
        log.info("OpenVINO model cache in %s", cache_dir)
    extension = options.get("cpu_extension") or None
    if extension is not None and not Path(extension).is_file():
        raise ValueError(f"--cpu_extension {extension}: no such file (a shared library of custom operations)")
    current.cache_dir = cache_dir or None
    current.cpu_extension = extension


def compile_config(plugin_config: Mapping[str, Any], allow_cache: bool) -> dict[str, Any]:
    """compile_model's properties: the model's plugin_config, with CACHE_DIR when the cache is on
    and the model allows it (a CACHE_DIR of the model's own plugin_config wins)."""
    config = dict(plugin_config)
    if current.cache_dir and allow_cache:
        config.setdefault("CACHE_DIR", current.cache_dir)
    return config
