"""OpenVINO itself, imported with its usage telemetry declined (see `import_openvino`).

Importing this module is how a script says "OpenVINO, quietly, now": the plugin's hooks call
`import_openvino()`, and a test or benchmark process that imports openvino itself imports this
module first (`import dropin_openvino.runtime`). The package and its plugin module never import
it: loading the plugin stays cheap.
"""

from __future__ import annotations

from . import import_openvino

ov = import_openvino()
