"""The custom node contract: Python code that runs as a node of a pipeline.

OVMS ran custom nodes from C libraries named in config.json's `custom_node_library_config_list`;
dropin runs plugin classes instead. A pipeline node of type "custom" names a library
(`library_name`), the library list maps that name to a registered `CustomNode` class, and the
node's `params` (strings, as in OVMS) reach the class once, when the pipeline is built:

    {"custom_node_library_config_list": [
        {"name": "crop", "base_path": "/ovms/lib/libcustom_node_model_zoo_intel_object_detection.so"}],
     "pipeline_config_list": [{"name": "detect_classify", "nodes": [
        {"name": "crop_boxes", "type": "custom", "library_name": "crop",
         "params": {"original_image_width": "1920"}, ...}]}]}

The library's `name` is looked up in the registry first; when no class has that name, the file
name in `base_path` is, without its `lib`/`libcustom_node_` prefix and `.so` suffix, so that an
OVMS configuration naming OVMS's own node libraries works unchanged.

Build time (a worker thread): the class is instantiated with the node's params, and its
`inputs` and `outputs` are checked against what the pipeline wires to and from them; an
exception fails the pipeline's load with its message in GetModelStatus.

Request time: `execute` runs in a worker thread with the node's input arrays and returns its
output arrays. A node with `demultiply_count` returns outputs whose first dimension is the number
of branches (fixed when the count is positive, any when it is -1): each slice then flows through
the rest of the pipeline on its own until a node gathers them.

    @hookimpl
    def dropin_register_custom_nodes(registry):
        registry.add("crop", CropBoxes)
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from .shapes import TensorSpec


class CustomNode(abc.ABC):
    """One custom node of one pipeline, built from its params; `execute` may be called from
    several threads at once, so keep the instance immutable after construction."""

    #: the name it is registered under (set by the registry)
    name: str = ""

    def __init__(self, params: Mapping[str, str]) -> None:
        """Read and check `params`; raise ValueError naming the param that is wrong or missing."""
        self.params = dict(params)

    @property
    @abc.abstractmethod
    def inputs(self) -> Mapping[str, TensorSpec]:
        """The inputs `execute` takes, by name (dims -1 where any size goes)."""

    @property
    @abc.abstractmethod
    def outputs(self) -> Mapping[str, TensorSpec]:
        """The outputs `execute` returns, by name; with demultiplexing, including the first
        dimension that counts the branches."""

    @abc.abstractmethod
    def execute(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Compute the outputs for one request. Runs in a worker thread. Raise ValueError with a
        message naming the input when the request's values cannot be handled (the client gets
        INVALID_ARGUMENT); any other exception is the node's fault (INTERNAL)."""

    def close(self) -> None:  # noqa: B027 - optional: most nodes hold nothing to release
        """Release what the node holds; called once the pipeline is removed and drained."""
