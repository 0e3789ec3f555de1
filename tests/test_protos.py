"""Checks on dropin's own TF Serving protos (protos/ -> core/dropin/_proto/).

* the generated package is in sync with protos/ (scripts/gen_protos.py --check);
* names, packages and service paths are exactly upstream's;
* wire compatibility: every field dropin declares exists with the same number,
  type and label in ovmsclient's copy of the upstream protos (TF 2.5 / TFS 2.5.1,
  renamed to the `ovmsclient` proto packages), recursively through nested and
  referenced messages; enum values likewise.

Run with PYTHONPATH=core.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2, descriptor, descriptor_pb2, descriptor_pool

from dropin._proto.tensorflow.core.framework import (
    resource_handle_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from dropin._proto.tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2
from dropin._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)
from dropin._proto.tensorflow_serving.config import (
    file_system_storage_path_source_pb2,
    model_server_config_pb2,
)

REPO = Path(__file__).resolve().parent.parent
FD = descriptor.FieldDescriptor

# Our proto package -> ovmsclient's renamed proto package.
PACKAGE_MAP = {
    "tensorflow.serving.": "ovmsclient.serving.",
    "tensorflow.error.": "ovmsclient.error.",
    "tensorflow.": "ovmsclient.",
}

# Fields that upstream added after the versions ovmsclient 2023.1 vendors
# (TF 2.5.0 / TFS 2.5.1). They were checked against newer upstream sources by
# hand. If ovmsclient has them, they are compared like every other field.
NEWER_THAN_OVMSCLIENT_FIELDS = {
    "tensorflow.TensorProto.float8_val",  # 18, TF 2.13+
    "tensorflow.SignatureDef.defaults",  # 4, TF 2.13+
    "tensorflow.serving.ReloadConfigRequest.metric_names",  # 2, TFS 2.15+
    "tensorflow.serving.ReloadConfigResponse.metric",  # 2, TFS 2.15+
}
NEWER_THAN_OVMSCLIENT_ENUM_VALUES = {
    "tensorflow.DataType": {
        "DT_FLOAT8_E5M2", "DT_FLOAT8_E4M3FN", "DT_INT4", "DT_UINT4",
        "DT_FLOAT8_E5M2_REF", "DT_FLOAT8_E4M3FN_REF", "DT_INT4_REF", "DT_UINT4_REF",
    },
}

# Messages named in the brief; each is compared with ovmsclient's counterpart,
# and everything reachable from them is compared as well.
MESSAGES = [
    tensor_pb2.TensorProto,
    tensor_shape_pb2.TensorShapeProto,
    resource_handle_pb2.ResourceHandleProto,
    model_pb2.ModelSpec,
    predict_pb2.PredictRequest,
    predict_pb2.PredictResponse,
    get_model_metadata_pb2.GetModelMetadataRequest,
    get_model_metadata_pb2.GetModelMetadataResponse,
    get_model_metadata_pb2.SignatureDefMap,
    meta_graph_pb2.SignatureDef,
    meta_graph_pb2.TensorInfo,
    get_model_status_pb2.GetModelStatusRequest,
    get_model_status_pb2.GetModelStatusResponse,
    get_model_status_pb2.ModelVersionStatus,
    status_pb2.StatusProto,
    model_management_pb2.ReloadConfigRequest,
    model_management_pb2.ReloadConfigResponse,
    model_server_config_pb2.ModelServerConfig,
    model_server_config_pb2.ModelConfig,
    file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy,
]

OUR_FILES = [
    types_pb2, tensor_shape_pb2, resource_handle_pb2, tensor_pb2, error_codes_pb2,
    meta_graph_pb2, model_pb2, predict_pb2, get_model_metadata_pb2, status_pb2,
    get_model_status_pb2, model_management_pb2, prediction_service_pb2,
    model_service_pb2, model_server_config_pb2, file_system_storage_path_source_pb2,
]


def _ovms_name(full_name: str) -> str:
    for ours, theirs in PACKAGE_MAP.items():
        if full_name.startswith(ours):
            return theirs + full_name[len(ours):]
    raise AssertionError(f"{full_name} is not in a tensorflow package")


@pytest.fixture(scope="module")
def ovms():
    """Import ovmsclient's generated modules (registers them in the default pool)."""
    from ovmsclient.tfs_compat.protos.tensorflow.core.framework import (  # noqa: F401
        resource_handle_pb2 as _rh,
    )
    from ovmsclient.tfs_compat.protos.tensorflow.core.protobuf import (  # noqa: F401
        error_codes_pb2 as _ec,
    )
    from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import (  # noqa: F401
        get_model_metadata_pb2 as _gmm,
    )
    from ovmsclient.tfs_compat.protos.tensorflow_serving.config import (  # noqa: F401
        file_system_storage_path_source_pb2 as _fs,
    )

    return descriptor_pool.Default()


# --------------------------------------------------------------------------- sync


def test_generated_code_is_up_to_date():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_protos.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"gen_protos.py --check failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
    )


def test_no_toplevel_tensorflow_module():
    # The generated code lives under dropin._proto; importing it must not
    # create (or need) top-level tensorflow / tensorflow_serving modules.
    assert "tensorflow" not in sys.modules
    assert "tensorflow_serving" not in sys.modules
    assert predict_pb2.PredictRequest.__module__ == "dropin._proto.tensorflow_serving.apis.predict_pb2"


# ------------------------------------------------------------------ names & paths


def test_file_names_and_packages_are_upstream():
    expected_package = {
        "tensorflow/core/protobuf/error_codes.proto": "tensorflow.error",
    }
    for module in OUR_FILES:
        fd = module.DESCRIPTOR
        # Module path mirrors the proto path.
        expected_module = "dropin._proto." + fd.name[: -len(".proto")].replace("/", ".") + "_pb2"
        assert module.__name__ == expected_module
        if fd.name.startswith("tensorflow_serving/"):
            assert fd.package == "tensorflow.serving", fd.name
        else:
            assert fd.package == expected_package.get(fd.name, "tensorflow"), fd.name
        fd_proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(fd_proto)
        assert fd_proto.syntax == "proto3", fd.name


def test_message_and_service_full_names():
    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"
    assert tensor_pb2.TensorProto.DESCRIPTOR.full_name == "tensorflow.TensorProto"
    assert status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type.full_name == (
        "tensorflow.error.Code"
    )

    ps = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    ms = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    assert ps.full_name == "tensorflow.serving.PredictionService"
    assert ms.full_name == "tensorflow.serving.ModelService"
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in ps.methods} == {
        "Predict": ("tensorflow.serving.PredictRequest", "tensorflow.serving.PredictResponse"),
        "GetModelMetadata": (
            "tensorflow.serving.GetModelMetadataRequest",
            "tensorflow.serving.GetModelMetadataResponse",
        ),
    }
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in ms.methods} == {
        "GetModelStatus": (
            "tensorflow.serving.GetModelStatusRequest",
            "tensorflow.serving.GetModelStatusResponse",
        ),
        "HandleReloadConfigRequest": (
            "tensorflow.serving.ReloadConfigRequest",
            "tensorflow.serving.ReloadConfigResponse",
        ),
    }
    # The gRPC modules expose the usual stub / servicer / registration names.
    for name in ("PredictionServiceStub", "PredictionServiceServicer",
                 "add_PredictionServiceServicer_to_server"):
        assert hasattr(prediction_service_pb2_grpc, name)
    for name in ("ModelServiceStub", "ModelServiceServicer", "add_ModelServiceServicer_to_server"):
        assert hasattr(model_service_pb2_grpc, name)


def test_grpc_method_paths():
    class Recorder:
        def __init__(self):
            self.paths = []

        def unary_unary(self, path, *args, **kwargs):
            self.paths.append(path)
            return None

    rec = Recorder()
    prediction_service_pb2_grpc.PredictionServiceStub(rec)
    model_service_pb2_grpc.ModelServiceStub(rec)
    assert sorted(rec.paths) == sorted([
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    ])


def test_signature_def_map_any_type_url():
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["x"].name = "x"
    sig.inputs["x"].dtype = types_pb2.DT_FLOAT
    packed = any_pb2.Any()
    packed.Pack(sig_map)
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    back = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(back) and back == sig_map


def test_tensor_numeric_fields_are_packed():
    fields = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name
    for name in ("float_val", "double_val", "int_val", "scomplex_val", "int64_val", "bool_val",
                 "dcomplex_val", "half_val", "uint32_val", "uint64_val"):
        assert fields[name].is_packed, name
    assert fields["half_val"].type == FD.TYPE_INT32
    # Packed wire form: tag 13, wire type 2, length 3, values 1 2 3.
    assert tensor_pb2.TensorProto(half_val=[1, 2, 3]).SerializeToString() == bytes.fromhex("6a03010203")


def test_no_proto3_optional():
    for module in OUR_FILES:
        for msg in _all_messages(module.DESCRIPTOR):
            for field in msg.fields:
                synthetic = field.containing_oneof is not None and field.containing_oneof.name.startswith("_")
                assert not synthetic, f"{msg.full_name}.{field.name} uses proto3 optional"


def test_key_enum_values():
    assert error_codes_pb2.Code.Value("UNAUTHENTICATED") == 16
    assert error_codes_pb2.Code.Value(
        "DO_NOT_USE_RESERVED_FOR_FUTURE_EXPANSION_USE_DEFAULT_IN_SWITCH_INSTEAD_"
    ) == 20
    state = get_model_status_pb2.ModelVersionStatus.State
    assert [state.Value(n) for n in ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")] == [
        0, 10, 20, 30, 40, 50
    ]
    assert types_pb2.DataType.Value("DT_HALF") == 19
    assert types_pb2.DataType.Value("DT_UINT64") == 23


# ------------------------------------------------------------- ovmsclient compare


def _all_messages(file_descriptor):
    stack = list(file_descriptor.message_types_by_name.values())
    while stack:
        msg = stack.pop()
        yield msg
        stack.extend(msg.nested_types)


def _label(field) -> str:
    if field.is_repeated:
        return "repeated"
    if field.is_required:
        return "required"
    return "optional"


def _compare_enum(ours, pool, problems, seen):
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    try:
        theirs = pool.FindEnumTypeByName(_ovms_name(ours.full_name))
    except KeyError:
        problems.append(f"enum {ours.full_name}: missing in ovmsclient")
        return
    allowed = NEWER_THAN_OVMSCLIENT_ENUM_VALUES.get(ours.full_name, set())
    for value in ours.values:
        other = theirs.values_by_name.get(value.name)
        if other is None:
            if value.name not in allowed:
                problems.append(f"enum {ours.full_name}.{value.name}: missing in ovmsclient")
        elif other.number != value.number:
            problems.append(
                f"enum {ours.full_name}.{value.name}: number {value.number} != ovmsclient {other.number}"
            )


def _compare_message(ours, pool, problems, seen):
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    try:
        theirs = pool.FindMessageTypeByName(_ovms_name(ours.full_name))
    except KeyError:
        problems.append(f"message {ours.full_name}: missing in ovmsclient")
        return
    for field in ours.fields:
        where = f"{ours.full_name}.{field.name} (= {field.number})"
        other = theirs.fields_by_number.get(field.number)
        if other is None:
            if f"{ours.full_name}.{field.name}" not in NEWER_THAN_OVMSCLIENT_FIELDS:
                problems.append(f"{where}: number missing in ovmsclient")
            continue
        if other.name != field.name:
            problems.append(f"{where}: name differs from ovmsclient's {other.name!r}")
        if other.type != field.type:
            problems.append(f"{where}: type {field.type} != ovmsclient {other.type}")
        if _label(other) != _label(field):
            problems.append(f"{where}: label {_label(field)} != ovmsclient {_label(other)}")
        if field.is_repeated and field.type not in (FD.TYPE_MESSAGE, FD.TYPE_STRING, FD.TYPE_BYTES):
            if field.is_packed != other.is_packed:
                problems.append(f"{where}: packed {field.is_packed} != ovmsclient {other.is_packed}")
        ours_oneof = field.containing_oneof.name if field.containing_oneof else None
        their_oneof = other.containing_oneof.name if other.containing_oneof else None
        if ours_oneof != their_oneof:
            problems.append(f"{where}: oneof {ours_oneof!r} != ovmsclient {their_oneof!r}")
        if field.type == FD.TYPE_MESSAGE:
            target = field.message_type.full_name
            if target.startswith("google.protobuf."):
                if other.message_type.full_name != target:
                    problems.append(f"{where}: type {target} != ovmsclient {other.message_type.full_name}")
            else:
                if other.message_type.full_name != _ovms_name(target):
                    problems.append(
                        f"{where}: message type {target} != ovmsclient {other.message_type.full_name}"
                    )
                _compare_message(field.message_type, pool, problems, seen)
        elif field.type == FD.TYPE_ENUM:
            if other.enum_type.full_name != _ovms_name(field.enum_type.full_name):
                problems.append(
                    f"{where}: enum type {field.enum_type.full_name} != ovmsclient {other.enum_type.full_name}"
                )
            _compare_enum(field.enum_type, pool, problems, seen)
    for enum in ours.enum_types:
        _compare_enum(enum, pool, problems, seen)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.DESCRIPTOR.full_name)
def test_wire_compatible_with_ovmsclient(ovms, message):
    problems: list[str] = []
    _compare_message(message.DESCRIPTOR, ovms, problems, set())
    assert not problems, "\n".join(problems)


def test_newer_fields_allowlist_is_accurate(ovms):
    # Every allow-listed field must exist on our side; entries that ovmsclient
    # turns out to have are harmless (they get compared normally) but the
    # allow-list should only name fields we really define.
    for path in NEWER_THAN_OVMSCLIENT_FIELDS:
        msg_name, field_name = path.rsplit(".", 1)
        ours = descriptor_pool.Default().FindMessageTypeByName(msg_name)
        assert field_name in ours.fields_by_name, path


def test_wire_roundtrip_through_ovmsclient(ovms):
    from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import predict_pb2 as ovms_predict

    request = predict_pb2.PredictRequest(output_filter=["y"])
    request.model_spec.name = "m"
    request.model_spec.version.value = 3
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_HALF
    tensor.tensor_shape.dim.add(size=2)
    tensor.half_val.extend([15360, 16384])
    data = request.SerializeToString(deterministic=True)

    theirs = ovms_predict.PredictRequest.FromString(data)
    assert theirs.model_spec.name == "m" and theirs.model_spec.version.value == 3
    assert list(theirs.inputs["x"].half_val) == [15360, 16384]
    assert theirs.inputs["x"].tensor_shape.dim[0].size == 2
    assert theirs.SerializeToString(deterministic=True) == data


def test_no_descriptor_clash_with_ovmsclient(ovms):
    pool = ovms
    from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import predict_pb2 as ovms_predict

    ours_files = {m.DESCRIPTOR.name for m in OUR_FILES}
    theirs_fd = ovms_predict.DESCRIPTOR
    # ovmsclient renamed both the file paths and the proto packages.
    assert theirs_fd.name.startswith("ovmsclient/tfs_compat/protos/")
    assert theirs_fd.package == "ovmsclient.serving"
    assert ovms_predict.PredictRequest.DESCRIPTOR.full_name == "ovmsclient.serving.PredictRequest"
    assert not any(dep.name in ours_files for dep in theirs_fd.dependencies)
    # Both live side by side in the default pool, each under its own names.
    assert pool.FindMessageTypeByName("tensorflow.serving.PredictRequest").file.name == (
        "tensorflow_serving/apis/predict.proto"
    )
    assert pool.FindMessageTypeByName("ovmsclient.serving.PredictRequest").file.name == theirs_fd.name
    for name in ours_files:
        assert pool.FindFileByName(name).package.startswith("tensorflow")
