"""dropin-openvino: the OpenVINO backend plugin for dropin (see plugin.py and backend.py).

Importing the package does nothing but define `import_openvino`: OpenVINO is imported by the
plugin's hooks, the first time through that function.
"""

from __future__ import annotations

import os as _os
from types import ModuleType


def import_openvino() -> ModuleType:
    """Import OpenVINO, the first time with its usage telemetry declined, and return it.

    `import openvino` starts OpenVINO's usage telemetry (through openvino.tools.ovc), which forks
    a process that sends events to an analytics service. A model server must not phone home, so
    the first import happens with the opt-out OpenVINO honours for CI jobs (CI=true); its
    telemetry singleton then stays declined for the life of the process, and the environment is
    restored. Call it before anything imports openvino: the plugin's hooks do; a test or
    benchmark process that imports openvino itself imports `dropin_openvino.runtime` first."""
    previous = _os.environ.get("CI")
    _os.environ["CI"] = "true"
    try:
        import openvino
        import openvino.tools.ovc  # noqa: F401
    finally:
        if previous is None:
            del _os.environ["CI"]
        else:
            _os.environ["CI"] = previous
    # OpenVINO's binding sets up its numpy bridge on first use, under a once-flag that can deadlock
    # when threads race for it (seen on this machine: grpc handler threads of a server frozen on
    # their first `Tensor.data`, inside pybind11's gil_safe_call_once_and_store<npy_api>). Set up
    # here, on the thread that imports OpenVINO, it has no first use left to race for.
    import numpy

    openvino.Tensor(numpy.zeros(1, numpy.float32)).data  # noqa: B018  (the access is the point)
    return openvino
