"""The dropin plugin module: what entry point `image` in group "dropin" points at.

dropin loads it explicitly at start-up and calls its hook; the preprocessor it registers is made
once, at the first model load, and is then asked to claim every model input (see
`dropin/preprocess.py` for the contract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from .preprocessor import ImagePreprocessor

if TYPE_CHECKING:
    from dropin.preprocess import Preprocessor
    from dropin.registry import Registry

hookimpl = pluggy.HookimplMarker("dropin")


@hookimpl
def dropin_register_preprocessors(registry: "Registry[Preprocessor]") -> None:
    registry.add("image", ImagePreprocessor)
