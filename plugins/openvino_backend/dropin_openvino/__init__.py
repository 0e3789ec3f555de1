"""dropin-openvino: the OpenVINO backend plugin for dropin (see plugin.py and backend.py)."""

import os as _os


def _import_openvino_without_telemetry() -> None:
    """`import openvino` starts OpenVINO's usage telemetry (through openvino.tools.ovc), which forks
    a process that sends events to an analytics service. A model server must not phone home, so
    the first import happens with the opt-out OpenVINO honours for CI jobs (CI=true); its telemetry
    singleton then stays declined for the life of the process."""
    previous = _os.environ.get("CI")
    _os.environ["CI"] = "true"
    try:
        import openvino  # noqa: F401
        import openvino.tools.ovc  # noqa: F401
    except ImportError:
        pass
    finally:
        if previous is None:
            del _os.environ["CI"]
        else:
            _os.environ["CI"] = previous


_import_openvino_without_telemetry()
