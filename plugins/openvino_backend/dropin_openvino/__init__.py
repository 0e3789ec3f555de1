"""dropin-openvino: the OpenVINO backend plugin for dropin (see plugin.py and backend.py)."""
