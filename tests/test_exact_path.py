"""The gRPC Predict's short path for the common request gives what the general path gives.

A request that fits its model's `ExactPlan` is read by `decode_exact` instead of being validated,
and every response is written by splicing the outputs into a serialization protobuf made once
(`predict_response_bytes`). Both must be indistinguishable from the general path: the same
arrays, the same bytes on the wire, and any request that is not exact left to validation.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dropin._proto.tensorflow_serving.apis import predict_pb2
from dropin.config import ModelConfig
from dropin.dataplane import DataPlane
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.metrics import GRPC, PREDICT, REST
from dropin.models import Model as ModelEntry
from dropin.models import ModelTable, ModelVersion, Servable, State
from dropin.request_scope import PredictResult
from dropin.sequences import SEQUENCE_ID
from dropin.shapes import TensorSpec
from dropin.tensor_proto import ProtoTensor, decode_exact, fill_proto
from dropin.tfs_messages import _layout, predict_response, predict_response_bytes
from dropin.validation import InputPlan, exact_plan

NUMERIC = [d for d in DType if d is not DType.STRING]


def sample(dtype: DType, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    raw = np.random.default_rng(seed).integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype.numpy).reshape(shape)  # every bit pattern, NaNs and all


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: d.value)
@pytest.mark.parametrize("shape", [(), (1,), (1, 10), (2, 3, 4), (1, 1000)])
def test_response_bytes_are_the_messages_serialization(dtype: DType, shape: tuple[int, ...]) -> None:
    for seed in range(3):  # the layout is made by the first; the others splice into it
        result = PredictResult("m", 3, {"out": sample(dtype, shape, seed)})
        assert predict_response_bytes(result) == predict_response(result).SerializeToString()


def test_large_outputs_are_written_by_protobuf() -> None:
    result = PredictResult("m", 1, {"big": sample(DType.FP32, (1, 300_000))})  # 1.2 MB
    assert predict_response_bytes(result) == predict_response(result).SerializeToString()
    assert _layout("m", 1, (("big", np.dtype(np.float32), (1, 300_000)),)) is None


def test_several_outputs_each_in_its_place() -> None:
    for seed in range(3):
        outputs = {
            "b": sample(DType.FP32, (2, 5), seed),
            "a": sample(DType.I64, (3,), seed + 10),
            "c": sample(DType.U8, (1, 1), seed + 20),
        }
        result = PredictResult("model", 1, outputs)
        parsed = predict_pb2.PredictResponse.FromString(predict_response_bytes(result))
        assert parsed == predict_response(result)
        for name, array in outputs.items():
            assert parsed.outputs[name].tensor_content == array.tobytes()


def test_outputs_the_general_path_writes_otherwise_are_written_by_it() -> None:
    strided = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]  # not C-contiguous: C order on the wire
    cases = [
        {"s": np.array([b"a", b"bc"], dtype=object)},
        {"t": strided},
        {"empty": np.zeros((0, 3), np.float32)},
        {"y": np.ones((1, 2), np.float32), SEQUENCE_ID: np.array([7], np.uint64)},
    ]
    for outputs in cases:
        result = PredictResult("m", 1, outputs)
        assert predict_pb2.PredictResponse.FromString(predict_response_bytes(result)) == predict_response(result)
    response = predict_pb2.PredictResponse.FromString(predict_response_bytes(PredictResult("m", 1, cases[1])))
    assert np.frombuffer(response.outputs["t"].tensor_content, np.float32).tolist() == strided.reshape(-1).tolist()
    big_endian = PredictResult("m", 1, {"e": np.arange(6, dtype=">i4")})  # a type no response carries
    with pytest.raises(DropinError, match="output e has type >i4") as raised:
        predict_response_bytes(big_endian)
    assert raised.value.status is Status.UNSUPPORTED_OUTPUT_PRECISION


def plans(*specs: TensorSpec) -> tuple[InputPlan, ...]:
    return tuple(InputPlan(s) for s in sorted(specs, key=lambda s: s.name))


def request_inputs(**arrays: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    for name, array in arrays.items():
        fill_proto(request.inputs[name], array)
    return request


def test_an_exact_request_is_read_without_a_copy() -> None:
    plan = exact_plan(plans(TensorSpec.of("x", DType.FP32, [1, 10]), TensorSpec.of("ids", DType.I64, [2])))
    assert plan is not None and plan.elements == 12 and plan.largest == 40
    x, ids = np.arange(10, dtype=np.float32).reshape(1, 10), np.array([5, 6], np.int64)
    request = request_inputs(x=x, ids=ids)
    arrays = decode_exact(plan, request.inputs)
    assert arrays is not None
    np.testing.assert_array_equal(arrays["x"], x)
    np.testing.assert_array_equal(arrays["ids"], ids)
    assert not arrays["x"].flags.owndata  # a view of the request's bytes


def test_any_other_request_is_left_to_validation() -> None:
    plan = exact_plan(plans(TensorSpec.of("x", DType.FP32, [1, 10])))
    assert plan is not None
    x = np.ones((1, 10), np.float32)
    typed = request_inputs()
    typed.inputs["x"].dtype = DType.FP32.tf_enum  # type: ignore[assignment]
    typed.inputs["x"].tensor_shape.dim.add().size = 1
    typed.inputs["x"].tensor_shape.dim.add().size = 10
    typed.inputs["x"].float_val.extend([1.0] * 10)
    short = request_inputs(x=x)
    short.inputs["x"].tensor_content = short.inputs["x"].tensor_content[:-4]
    named = request_inputs(x=x)
    named.inputs["x"].tensor_shape.dim[1].name = "features"
    unknown = request_inputs(x=x)
    unknown.inputs["x"].tensor_shape.MergeFromString(b"\x28\x05")  # field 5, which TensorShapeProto lacks
    for request in [
        request_inputs(x=x.astype(np.float64)),  # another type
        request_inputs(x=x.reshape(10, 1)),  # another shape, the same bytes
        request_inputs(x=x.reshape(10)),  # another rank
        request_inputs(y=x),  # another name
        request_inputs(x=x, extra=x),  # one input too many
        request_inputs(),  # none
        typed,  # values in float_val
        short,  # too few bytes
        named,  # dims with names: validation reads them
        unknown,  # a field this server does not know
    ]:
        before = request.SerializeToString()
        assert decode_exact(plan, request.inputs) is None
        assert request.SerializeToString() == before  # nothing added to the map by looking


def test_models_with_inputs_of_no_static_shape_or_strings_have_no_exact_plan() -> None:
    assert exact_plan(plans(TensorSpec.of("x", DType.FP32, [-1, 10]))) is None
    assert exact_plan(plans(TensorSpec.of("s", DType.STRING, [1]))) is None
    assert exact_plan(plans(TensorSpec.of("x", DType.FP32, [1, 10]), TensorSpec.of("s", DType.STRING, [1]))) is None


class Model:  # what Servable and the data plane read of a backend's model: y = 2 * x
    infers_now = True
    outputs = {"y": TensorSpec.of("y", DType.FP32, [-1, 10])}

    def infer_now(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2}


def servable(*specs: TensorSpec) -> Servable:
    return Servable("m", 1, Model(), plans(*specs), "test")  # type: ignore[arg-type]


def test_a_model_of_static_shapes_keeps_its_plan() -> None:
    static = servable(TensorSpec.of("x", DType.FP32, [1, 10]))
    plan = static.exact
    assert plan is not None and plan.inputs[0].shape == (1, 10)
    static.learn_exact({"x": (1, 10)})
    assert static.exact is plan


def test_a_model_of_dynamic_shapes_learns_the_shape_of_the_last_valid_request() -> None:
    dynamic = servable(TensorSpec.of("x", DType.FP32, [-1, 10]))
    assert dynamic.exact is None  # nothing known before a request passed validation
    dynamic.learn_exact({"x": (2, 10)})
    plan = dynamic.exact
    assert plan is not None and plan.inputs[0].shape == (2, 10) and plan.largest == 80
    assert decode_exact(plan, request_inputs(x=np.ones((2, 10), np.float32)).inputs) is not None
    assert decode_exact(plan, request_inputs(x=np.ones((3, 10), np.float32)).inputs) is None
    dynamic.learn_exact({"x": (2, 10)})
    assert dynamic.exact is plan  # the same shape again: kept, not made again
    dynamic.learn_exact({"x": (3, 10)})
    assert dynamic.exact is not None and dynamic.exact.inputs[0].shape == (3, 10)
    dynamic.plans = plans(TensorSpec.of("x", DType.FP32, [-1, 10]))  # a reshape reload's new plans
    assert dynamic.exact is None


def test_models_that_do_not_infer_in_the_calling_thread_have_a_plan_only_for_the_loop() -> None:
    elsewhere = servable(TensorSpec.of("x", DType.FP32, [1, 10]))
    elsewhere.model = Loop()  # type: ignore[assignment]  # no infer_now
    plane = plane_serving(elsewhere)
    with plane.request(REST, PREDICT) as scope:
        assert scope.resolve_now("m", 0)
        plan = scope.exact_plan()
        assert plan is not None and plan.inputs[0].shape == (1, 10)
    with plane.request(GRPC, PREDICT) as scope:
        assert scope.resolve_exact_now("m", 0) is None  # a handler thread cannot infer it: `infer_now` decides
        assert scope.resolved
    with plane.request(REST, PREDICT) as scope:
        assert scope.resolve_now("m", 0)
        plan = scope.exact_plan()
        assert plan is not None
        result = asyncio.run(scope.infer_exact({"x": np.ones((1, 10), np.float32)}))
        assert result.outputs["y"].tolist() == [[3.0] * 10]
    plane.close()


class Loop:  # a model that infers only on the event loop
    outputs = Model.outputs

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 3}


class Manager:  # what the data plane reads of the model manager
    loader = None

    def __init__(self, table: ModelTable) -> None:
        self.table = table


def plane_serving(served: Servable, **limits: int) -> DataPlane:
    table = ModelTable()
    model = ModelEntry(ModelConfig(name="m", base_path="/nonexistent"))
    version = ModelVersion("m", 1, State.AVAILABLE)
    version.servable = served
    model.versions[1] = version
    model.update_default()
    table.models["m"] = model
    return DataPlane(Manager(table), **limits)  # type: ignore[arg-type]


def test_the_data_plane_learns_the_shape_of_a_request_it_validated() -> None:
    plane = plane_serving(servable(TensorSpec.of("x", DType.FP32, [-1, 10])))
    request = request_inputs(x=np.ones((3, 10), np.float32))
    with plane.request(GRPC, PREDICT) as scope:
        assert scope.resolve_now("m", 0)
        assert scope.exact_plan() is None
        result = scope.infer_now({"x": ProtoTensor(request.inputs["x"])})
        assert result is not None and result.outputs["y"].tolist() == [[2.0] * 10] * 3
    with plane.request(GRPC, PREDICT) as scope:
        plan = scope.resolve_exact_now("m", 0)
        assert plan is not None and scope.resolved
        arrays = decode_exact(plan, request.inputs)
        assert arrays is not None
        assert scope.infer_exact_now(arrays).outputs["y"].tolist() == [[2.0] * 10] * 3
    plane.close()


def test_a_plan_beyond_the_servers_limits_is_not_used() -> None:
    for limits in ({"max_elements": 9}, {"max_tensor_bytes": 39}):  # the input holds 10 elements, 40 bytes
        plane = plane_serving(servable(TensorSpec.of("x", DType.FP32, [1, 10])), **limits)
        with plane.request(GRPC, PREDICT) as scope:
            assert scope.resolve_now("m", 0)
            assert scope.exact_plan() is None  # validation refuses such a request, with its message
        with plane.request(GRPC, PREDICT) as scope:
            assert scope.resolve_exact_now("m", 0) is None and scope.resolved
        plane.close()
    plane = plane_serving(servable(TensorSpec.of("x", DType.FP32, [1, 10])), max_elements=10, max_tensor_bytes=40)
    with plane.request(GRPC, PREDICT) as scope:
        assert scope.resolve_now("m", 0)
        assert scope.exact_plan() is not None
    with plane.request(GRPC, PREDICT) as scope:
        assert scope.resolve_exact_now("m", 0) is not None
    plane.close()


def test_a_version_not_available_now_is_not_resolved_in_the_calling_thread() -> None:
    plane = plane_serving(servable(TensorSpec.of("x", DType.FP32, [1, 10])))
    for name, version in (("m", 2), ("other", 0)):
        with plane.request(GRPC, PREDICT) as scope:
            assert scope.resolve_exact_now(name, version) is None
            assert not scope.resolved  # the handler resolves on the loop, which waits or says why
    plane.table.models["m"].versions[1].state = State.LOADING
    with plane.request(GRPC, PREDICT) as scope:
        assert scope.resolve_exact_now("m", 1) is None and not scope.resolved
    plane.close()
