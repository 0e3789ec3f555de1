"""OVMS's input and output renaming: `mapping_config.json` in a version directory.

    {"inputs": {"<model's input name>": "<name clients use>"}, "outputs": {...}}

Clients then see only the mapped names: metadata, Predict (gRPC and REST), output_filter and
every validation message, because the loaded model itself is wrapped (`MappedModel`) before the
core plans its inputs. Names not in the file keep their own name, as in OVMS; a name in the file
that the model does not have is ignored, as in OVMS. The file belongs to the version's files, so
a change to it reloads the version like any other file; a malformed file fails the load, saying why.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .backend import InferOutputs, LoadedModel, LoadOptions
from .shapes import TensorSpec

MAPPING_FILE = "mapping_config.json"


class MappingError(Exception):
    """mapping_config.json is malformed; the message says how."""


@dataclasses.dataclass(frozen=True)
class NameMapping:
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]


def read_mapping(version_dir: Path) -> NameMapping | None:
    """The version's mapping_config.json, None without one. Raises MappingError if malformed."""
    path = Path(version_dir) / MAPPING_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise MappingError(f"{MAPPING_FILE} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not ({"inputs", "outputs"} & set(document)):
        raise MappingError(f'{MAPPING_FILE} must be an object with "inputs" and/or "outputs"')
    extra = sorted(set(document) - {"inputs", "outputs"})
    if extra:
        raise MappingError(f"{MAPPING_FILE}: unknown key(s) {', '.join(extra)}")
    return NameMapping(_names(document, "inputs"), _names(document, "outputs"))


def model_load_options(options: LoadOptions, mapping: NameMapping | None) -> LoadOptions:
    """`options` whose per-input `shape` and `layout` may name inputs by their mapped names (as
    OVMS lets them), with those names turned back into the model's for the backend."""
    if mapping is None or not mapping.inputs:
        return options
    to_model = {new: old for old, new in mapping.inputs.items()}

    def unmapped(value: str | Mapping[str, str] | None) -> str | Mapping[str, str] | None:
        if not isinstance(value, Mapping):
            return value
        return {to_model.get(name, name): v for name, v in value.items()}

    return dataclasses.replace(options, shape=unmapped(options.shape), layout=unmapped(options.layout))


def _names(document: dict[str, Any], kind: str) -> dict[str, str]:
    names = document.get(kind, {})
    if not isinstance(names, dict) or not all(isinstance(v, str) and v for v in names.values()):
        raise MappingError(f"{MAPPING_FILE}: {kind} must map each {kind[:-1]} name to a non-empty string")
    return dict(names)


def _renamed(specs: Mapping[str, TensorSpec], names: Mapping[str, str], kind: str) -> dict[str, TensorSpec]:
    renamed: dict[str, TensorSpec] = {}
    for name, spec in specs.items():
        new = names.get(name, name)
        if new in renamed:
            raise MappingError(f"{MAPPING_FILE}: two {kind} would be named {new!r}")
        renamed[new] = dataclasses.replace(spec, name=new)
    return renamed


def apply_mapping(model: LoadedModel, mapping: NameMapping | None) -> LoadedModel:
    """`model` as clients see it with `mapping` (unchanged without one, or when it renames nothing)."""
    if mapping is None:
        return model
    wrapped = MappedModel(model, mapping)
    if wrapped.inputs.keys() == model.inputs.keys() and wrapped.outputs.keys() == model.outputs.keys():
        return model
    return wrapped


class MappedModel(LoadedModel):
    """A loaded model whose inputs and outputs carry the names of a mapping_config.json."""

    def __init__(self, model: LoadedModel, mapping: NameMapping) -> None:
        self._model = model
        self._inputs = _renamed(model.inputs, mapping.inputs, "inputs")
        self._outputs = _renamed(model.outputs, mapping.outputs, "outputs")
        # mapped input name -> the model's; the model's output name -> mapped (renames only)
        self._to_model = {new: spec_name for spec_name, new in _pairs(model.inputs, self._inputs)}
        self._to_client = dict(_pairs(model.outputs, self._outputs))
        self.streams = model.streams
        self.infers_now = model.infers_now

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    def _model_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        to_model = self._to_model
        return {to_model.get(name, name): array for name, array in inputs.items()}

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self._renamed(await self._model.infer(self._model_inputs(inputs)))

    def infer_now(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self._renamed(self._model.infer_now(self._model_inputs(inputs)))

    def _renamed(self, outputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        to_client = self._to_client
        renamed = ((to_client.get(name, name), array) for name, array in outputs.items())
        if isinstance(outputs, InferOutputs):
            return InferOutputs(renamed, outputs.wait_seconds, outputs.infer_seconds)
        return dict(renamed)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        self._model.check_inputs(self._model_inputs(inputs))

    def close(self) -> None:
        self._model.close()


def _pairs(original: Mapping[str, TensorSpec], renamed: Mapping[str, TensorSpec]) -> list[tuple[str, str]]:
    """(model's name, mapped name) for each tensor that was renamed (dicts keep their order)."""
    return [(old, new) for old, new in zip(original, renamed, strict=True) if old != new]
