"""The REST :predict short path for the common request gives what the general path gives.

`parse_predict(body, plan)` (rest_exact.py: `exact_unnamed`, then `exact_arrays`) makes a request's
arrays itself when its JSON is exactly what the model's `ExactPlan` says, and the data plane
then runs them without validation. It must never disagree with the general path (`tensors` and
`validate_request`): for a large set of bodies, good and bad, against plans of every numeric
type, in-process and with both JSON codecs, it gives the same arrays or the same error, or
leaves the body to the general path. Then a real server over HTTP: exact requests answer the
model's values, bad requests between them answer their errors, and a model of dynamic shapes
answers right while the shape it learned keeps changing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropin import rest_json
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.rest_exact import exact_unnamed, parse_predict
from dropin.rest_json import PredictRequest, loads, may_hold_literals
from dropin.shapes import TensorSpec
from dropin.testing import numpy_models as modelgen
from dropin.testing.expect import expect
from dropin.testing.raw_http import post
from dropin.testing.server import DropinServer, free_port
from dropin.validation import ExactPlan, InputPlan, exact_plan, validate_request

NUMERIC = [d for d in DType if d is not DType.STRING]


@pytest.fixture(params=["orjson", "json"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "json":
        monkeypatch.setattr(rest_json, "orjson", None)
    return str(request.param)


# -- the two paths, in-process -----------------------------------------------------------------

Outcome = Any  # dict of arrays, (Status, message), or None (the exact path left it to the general path)


def general_path(plans: tuple[InputPlan, ...], specs: Mapping[str, TensorSpec], body: bytes) -> Outcome:
    try:
        arrays, conversions = validate_request(plans, PredictRequest.parse(body).tensors(specs))
    except DropinError as exc:
        return exc.status, exc.message
    assert not conversions
    return arrays


def exact_path(plan: ExactPlan, body: bytes) -> Outcome:
    """What the server reads: `parse_predict`, whose arrays come from `exact_unnamed` for the
    common body and from `exact_arrays` for the others."""
    try:
        return parse_predict(body, plan)[1]
    except DropinError as exc:
        return exc.status, exc.message


def same_arrays(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


def shown(outcome: Outcome) -> str:
    if isinstance(outcome, tuple):
        return f"{outcome[0].name}: {outcome[1]}"
    if isinstance(outcome, dict):
        return ", ".join(f"{k}={v.dtype}{list(v.shape)} {v.tolist()}" for k, v in outcome.items())
    return repr(outcome)


def disagreement(exact: Outcome, general: Outcome) -> bool:
    if exact is None:
        return False
    if isinstance(exact, dict):
        return not (isinstance(general, dict) and same_arrays(exact, general))
    return exact != general


# -- the bodies --------------------------------------------------------------------------------


def nested(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return list(flat)
    step = prod(shape[1:])
    return [nested(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def plain_values(dtype: DType, n: int) -> list[Any]:
    if dtype is DType.BOOL:
        return [i % 2 for i in range(n)]
    if dtype.numpy.kind == "f":
        return [i * 1.25 - 2 for i in range(n)]  # with fractions and without (-2.0, 3.0)
    return [(i * 7) % 100 for i in range(n)]


def special_values(dtype: DType) -> list[tuple[Any, bool]]:
    """(a value put among plain ones, whether the exact path must decide the body: give arrays or an error)."""
    bad_leaves: list[tuple[Any, bool]] = [(True, False), (False, False), (None, False), ("1", False),
                                          ({"b64": "AQ=="}, False), ([1], False), ({}, False)]
    huge_ints = [2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, 10**30]
    if dtype.numpy.kind == "f":
        floats = [2.0, -0.5, 1e-50, -0.0, 1e20, 65504.0, 65519.0, 65520.0, 1e5, 70000, 3.4e38, 3.5e38, -3.5e38,
                  3.5e39, -3.5e39, 1.7976931348623157e308, -1e308]
        return [(v, True) for v in floats + huge_ints] + bad_leaves
    if dtype is DType.BOOL:
        return [(v, True) for v in (0, 1, 2, -1)] + [(1.0, False), (0.5, False)] + bad_leaves
    info = np.iinfo(dtype.numpy)
    edges = [int(info.min), int(info.max), int(info.min) - 1, int(info.max) + 1, -1, 300, 256]
    ints = [(v, -(2**63) <= v < 2**63) for v in edges + huge_ints]  # beyond int64, numpy reads them mixed as floats
    return ints + [(2.0, False), (2.5, False), (1e18, False), (1e20, False), (-1.0, False)] + bad_leaves


def placements(flat: list[Any], value: Any) -> Iterator[list[Any]]:
    yield [value, *flat[1:]]
    yield [*flat[:-1], value]


def structures(values: list[Any], shape: tuple[int, ...]) -> Iterator[tuple[Any, bool]]:
    """An input's JSON value: as the plan says (True), and in every wrong shape (False)."""
    good = nested(values, shape)
    yield good, True
    inner = prod(shape[1:])
    yield nested(values + values[:inner], (shape[0] + 1, *shape[1:])), False  # another batch
    if shape[0] > 1:
        yield nested(values[:inner], (1, *shape[1:])), False
    if len(shape) > 1:
        yield list(values), False  # flat
        yield [[*row, values[0]] for row in good], False  # another inner length
        yield [[*good[0], values[0]], *good[1:]], False  # ragged
        yield [*good[:-1], good[-1][:-1]], False
        yield [[[v] for v in row] for row in good], False  # one level too deep
        yield [[[[v]] for v in row] for row in good], False  # two
    deep: Any = good
    for _ in range(40):
        deep = [deep]
    yield deep, False  # deeper than MAX_RANK
    yield [], False
    yield [[]], False
    yield [[] for _ in range(shape[0])], False
    yield values[0], False  # a number, not an array


def single_bodies(name: str, values: Any) -> Iterator[tuple[dict[str, Any], bool]]:
    """A one-input model's bodies around one input value: those the exact path must read, then the others."""
    yield {"instances": values}, True
    yield {"inputs": values}, True
    yield {"inputs": {name: values}}, True
    yield {"signature_name": "serving_default", "inputs": {name: values}}, True
    yield {"instances": values, "signature_name": "serving_default"}, True
    yield {"signature_name": "true", "inputs": values}, False  # the word true somewhere: booleans may hide
    yield {"inputs": {name: values, "extra": values}}, False
    yield {"inputs": {name + "_other": values}}, False
    yield {"instances": {name: values}}, False
    if isinstance(values, list):
        yield {"instances": [{name: row} for row in values]}, False
        yield {"inputs": {name: values}, "instances": values}, False


def single_corpus(spec: TensorSpec, shape: tuple[int, ...]) -> list[tuple[bytes, bool]]:
    flat = plain_values(spec.dtype, prod(shape))
    bodies: list[tuple[dict[str, Any], bool]] = []
    for special, decides in special_values(spec.dtype):
        for values in placements(flat, special):
            bodies += [(b, decides and d) for b, d in single_bodies(spec.name, nested(values, shape))]
    for value, decides in structures(flat, shape):
        bodies += [(b, decides and d) for b, d in single_bodies(spec.name, value)]
    bodies += [({"inputs": {}}, False), ({"instances": []}, False), ({"inputs": None}, False),
               ({"instances": [None]}, False), ({}, False)]
    return [(json.dumps(body).encode(), decides) for body, decides in bodies]


def pair_corpus(
    a: TensorSpec, b: TensorSpec, shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> list[tuple[bytes, bool]]:
    """Two inputs, by name in the column format (in both orders of their keys), and in every other way."""
    flat_a, flat_b = plain_values(a.dtype, prod(shapes[0])), plain_values(b.dtype, prod(shapes[1]))
    plain_a, plain_b = nested(flat_a, shapes[0]), nested(flat_b, shapes[1])
    values_a = list(structures(flat_a, shapes[0]))  # the plain value first
    values_a += [(nested([v, *flat_a[1:]], shapes[0]), d) for v, d in special_values(a.dtype)]
    values_b = list(structures(flat_b, shapes[1]))
    values_b += [(nested([*flat_b[:-1], v], shapes[1]), d) for v, d in special_values(b.dtype)]
    bodies: list[tuple[dict[str, Any], bool]] = []
    for va, da in values_a:
        for vb, db in values_b:
            bodies.append(({"inputs": {a.name: va, b.name: vb}}, da and db))
            bodies.append(({"inputs": {b.name: vb, a.name: va}}, da and db))
    bodies += [
        ({"inputs": {a.name: plain_a}}, False),
        ({"inputs": {a.name: plain_a, b.name: plain_b, "c": plain_b}}, False),
        ({"inputs": {a.name: plain_a, "c": plain_b}}, False),
        ({"inputs": plain_a}, False),
        ({"instances": plain_a}, False),
        ({"instances": {a.name: plain_a, b.name: plain_b}}, False),
        ({"instances": [{a.name: ra, b.name: rb} for ra, rb in zip(plain_a, plain_b, strict=True)]}, False),
        ({"signature_name": "false", "inputs": {a.name: plain_a, b.name: plain_b}}, False),
    ]
    return [(json.dumps(body).encode(), decides) for body, decides in bodies]


def spec_x(dtype: DType, shape: list[int]) -> TensorSpec:
    return TensorSpec.of("x", dtype, shape)


# (specs, the shapes a request that passed validation had: None for a plan of static shapes)
Setup = tuple[tuple[TensorSpec, ...], dict[str, tuple[int, ...]] | None]

SETUPS: dict[str, Setup] = {
    **{f"{d.value}-{s[0]}x{s[1]}": ((spec_x(d, s),), None) for d in NUMERIC for s in ([1, 3], [2, 2])},
    "FP32-3": ((spec_x(DType.FP32, [3]),), None),
    "FP32-learned-2x3": ((spec_x(DType.FP32, [-1, 3]),), {"x": (2, 3)}),
    "I32-learned-1x3": ((spec_x(DType.I32, [-1, -1]),), {"x": (1, 3)}),
    "U8-learned-3x1": ((spec_x(DType.U8, [-1, 1]),), {"x": (3, 1)}),
    "I8+FP32": ((TensorSpec.of("a", DType.I8, [1, 2]), TensorSpec.of("b", DType.FP32, [1, 2])), None),
    "U64+BOOL": ((TensorSpec.of("a", DType.U64, [2, 1]), TensorSpec.of("b", DType.BOOL, [2, 1])), None),
    "FP16+I64-learned": (
        (TensorSpec.of("a", DType.FP16, [-1, 2]), TensorSpec.of("b", DType.I64, [-1, 2])), {"a": (1, 2), "b": (1, 2)}
    ),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_the_exact_path_never_disagrees_with_the_general_path(setup: str, codec: str) -> None:
    specs_in, shapes = SETUPS[setup]
    specs = {s.name: s for s in specs_in}
    plans = tuple(InputPlan(s) for s in sorted(specs_in, key=lambda s: s.name))
    plan = exact_plan(plans, shapes)
    assert plan is not None
    plan_shapes = tuple(i.shape for i in plan.inputs)
    if len(specs_in) == 1:
        corpus = single_corpus(specs_in[0], plan_shapes[0])
    else:
        corpus = pair_corpus(plans[0].spec, plans[1].spec, (plan_shapes[0], plan_shapes[1]))
    disagreements, undecided, answered = [], [], 0
    for body, must_decide in corpus:
        exact, general = exact_path(plan, body), general_path(plans, specs, body)
        if disagreement(exact, general):
            disagreements.append(f"{body.decode()}\n    exact: {shown(exact)}\n    general: {shown(general)}")
        if must_decide and exact is None:
            undecided.append(body.decode())
        answered += isinstance(exact, dict)
    assert not disagreements, f"{len(disagreements)} of {len(corpus)} bodies:\n" + "\n".join(disagreements[:20])
    assert not undecided, "bodies of exactly the plan's inputs left to the general path:\n" + "\n".join(undecided[:20])
    assert answered >= 5, "the exact path read (almost) no body"


def test_the_exact_path_reads_each_format_and_refuses_what_a_type_would_change(codec: str) -> None:
    plans = (InputPlan(TensorSpec.of("x", DType.U8, [2, 2])),)
    plan = exact_plan(plans)
    assert plan is not None
    for body in (b'{"instances": [[1, 2], [3, 255]]}', b'{"inputs": [[1, 2], [3, 255]]}',
                 b'{"inputs": {"x": [[1, 2], [3, 255]]}}'):
        arrays = exact_path(plan, body)
        assert isinstance(arrays, dict) and list(arrays) == ["x"], body
        assert arrays["x"].dtype == np.uint8 and arrays["x"].tolist() == [[1, 2], [3, 255]]
    assert exact_path(plan, b'{"inputs": [[1, 2], [3, 256]]}') == (
        Status.INVALID_VALUE,
        "Invalid value for the input type - Expected: U8 values, integers in [0, 255]; Actual: 256; input name: x",
    )
    for left in (b'{"inputs": [[1, 2], [3, true]]}', b'{"inputs": [[1, 2], [3, 4.0]]}', b'{"inputs": [[1, 2, 3]]}',
                 b'{"inputs": [[1, 2], [3, "4"]]}', b'{"instances": {"x": [[1, 2], [3, 4]]}}'):
        assert exact_path(plan, left) is None, left


def test_a_float_input_is_read_as_its_type_only_from_a_body_of_numbers(codec: str) -> None:
    """numpy would read null as NaN, true as 1 and "1.5" as 1.5 into a float32 array: such a body
    is left to the general path, whatever its keys and signature_name hold."""
    plan = exact_plan((InputPlan(TensorSpec.of("x", DType.FP32, [1, 2])),))
    assert plan is not None
    for body in (b'{"instances": [[1.5, 2]]}', b'{"signature_name": "s", "inputs": {"x": [[1.5, 2]]}}',
                 b'{"inputs": {"x": [[1.5, 2]]}, "signature_name": 7}',
                 b'{"inputs": {"x": [[1.5, 2]]}, "y": "a string elsewhere: read through a cast"}'):
        arrays = exact_path(plan, body)
        assert isinstance(arrays, dict), body
        assert arrays["x"].dtype == np.float32 and arrays["x"].tolist() == [[1.5, 2.0]], body
    for left in (b'{"instances": [[1.5, "2"]]}', b'{"instances": [[1.5, null]]}', b'{"instances": [[1.5, true]]}',
                 b'{"signature_name": "s", "instances": [["1.5", 2]]}', b'{"inputs": {"x": [["1", 2]]}, "s\\"": 1}'):
        assert exact_path(plan, left) is None, left
    assert exact_path(plan, b'{"instances": [[1.5, 3.5e38]]}') == (
        Status.INVALID_VALUE,
        "Invalid value for the input type - Expected: FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: 3.5e+38; "
        "input name: x",
    )


def test_the_common_body_is_read_in_one_step_and_every_other_is_left_to_predict_request(codec: str) -> None:
    """`exact_unnamed` reads `{"instances": [...]}` or `{"inputs": [...]}` alone, numbers only,
    for a model of one input, and nothing else (the corpus above holds it to the general path);
    a float array past the size summed in Python is checked by numpy, with the same errors."""
    plan = exact_plan((InputPlan(TensorSpec.of("x", DType.FP32, [1, 2])),))
    assert plan is not None
    for body, order in ((b'{"instances": [[1.5, 2]]}', "row"), (b'{"inputs": [[1.5, 2]]}', "column")):
        read = exact_unnamed(loads(body), may_hold_literals(body), body.count(b'"'), plan)
        assert read is not None and read[0] == order and read[1]["x"].tolist() == [[1.5, 2.0]], body
        assert parse_predict(body, plan)[0] == order
    for left in (b'{"inputs": {"x": [[1.5, 2]]}}', b'{"instances": [[1.5, 2]], "signature_name": "s"}',
                 b'{"instances": [[1.5, null]]}', b'{"instances": [[1.5, 2, 3]]}', b'{"other": [[1.5, 2]]}', b"[1]"):
        assert exact_unnamed(loads(left), may_hold_literals(left), left.count(b'"'), plan) is None, left
    two = exact_plan(tuple(InputPlan(TensorSpec.of(name, DType.FP32, [1, 2])) for name in "ab"))
    assert two is not None and exact_unnamed(loads(b'{"inputs": [[1, 2]]}'), False, 2, two) is None
    wide = exact_plan((InputPlan(TensorSpec.of("x", DType.FP32, [1, 300])),))
    assert wide is not None
    values = [i / 4 for i in range(300)]
    body = json.dumps({"instances": [values]}).encode()
    arrays = exact_path(wide, body)
    assert isinstance(arrays, dict) and arrays["x"].tolist() == [values]
    values[150] = -3.5e38
    assert exact_path(wide, json.dumps({"instances": [values]}).encode()) == (
        Status.INVALID_VALUE,
        "Invalid value for the input type - Expected: FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: -3.5e+38; "
        "input name: x",
    )


def test_two_wrong_inputs_answer_the_error_the_general_path_answers(codec: str) -> None:
    """The general path reads the inputs in the body's order and answers the first error it meets;
    the exact path must answer that one too, whatever the order of the plan's inputs."""
    specs_in = (TensorSpec.of("a", DType.I8, [1, 2]), TensorSpec.of("b", DType.FP32, [1, 2]))
    plans = tuple(InputPlan(s) for s in specs_in)
    plan = exact_plan(plans)
    assert plan is not None
    for body in (
        b'{"inputs": {"b": [[1.5, 3.5e39]], "a": [[300, 1]]}}',
        b'{"inputs": {"b": [[1.5, "x"]], "a": [[300, 1]]}}',
        b'{"inputs": {"a": [[300, 1]], "b": [[1.5, 3.5e39]]}}',
    ):
        general = general_path(plans, {s.name: s for s in specs_in}, body)
        assert isinstance(general, tuple), body
        assert exact_path(plan, body) in (None, general), body


# -- a real server, over HTTP --------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rest_exact")
    modelgen.scale_model(root / "scale" / "1", shape=(1, 3), factor=2.0, offset=0.5)  # static shape
    modelgen.token_model(root / "tokens" / "1", length=4)  # I32 [-1, 4]: a dynamic batch
    modelgen.dynamic_model(root / "dynamic" / "1")  # FP32 [-1, -1]
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[DropinServer]:
    models = [{"config": {"name": name, "base_path": name}} for name in ("scale", "tokens", "dynamic")]
    (repo / "config.json").write_text(json.dumps({"model_config_list": models}))
    srv = DropinServer(["--config_path", str(repo / "config.json"), "--rest_port", str(free_port()),
                        "--rest_bind_address", "127.0.0.1"])
    try:
        for name in ("scale", "tokens", "dynamic"):
            srv.wait_for(name, 1)
        yield srv
    finally:
        srv.stop()


def predict(server: DropinServer, model: str, body: Any) -> dict[str, Any]:
    reply = post(server, f"/v1/models/{model}:predict", body)
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = reply.json
    return answer


def reference(repo: Path, model: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    return modelgen.run_numpy(repo / model / "1", inputs)


def check_scale(server: DropinServer, repo: Path, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((1, 3)).astype(np.float32)
    y = reference(repo, "scale", x=x)["y"]
    assert y.tolist() != x.tolist()
    column = predict(server, "scale", {"inputs": {"x": x.tolist()}})
    np.testing.assert_array_equal(np.array(column["outputs"], np.float32), y)
    row = predict(server, "scale", {"instances": x.tolist()})
    np.testing.assert_array_equal(np.array(row["predictions"], np.float32), y)


def test_exact_requests_answer_the_models_values(server: DropinServer, repo: Path) -> None:
    for seed in range(3):
        check_scale(server, repo, seed)
    ints = predict(server, "scale", {"inputs": [[1, 2, 3]]})["outputs"]  # integers for an FP32 input
    assert ints == [[2.5, 4.5, 6.5]]


BAD = "Invalid value for the input type - Expected: "


@pytest.mark.parametrize("model,body,status,message", [
    ("scale", {"inputs": [[1, 3.5e39, 3]]}, 400,
     BAD + "FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: 3.5e+39; input name: x"),
    ("scale", {"inputs": [[1, True, 3]]}, 400, BAD + "FP32 numbers; Actual: true; input name: x"),
    ("scale", {"instances": [[1, 2, 3, 4]]}, 400,
     "Invalid input shape - Expected: (1,3); Actual: (1,4); input name: x"),
    ("scale", {"inputs": {"x": [[1, 2, 3]], "z": [[1, 2, 3]]}}, 400,
     "Invalid number of inputs - Expected: 1; Actual: 2"),
    ("scale", {"inputs": [["a", "b", "c"]]}, 400, "Could not parse input content. Not valid ndarray detected - strings "
     'need {"b64": ...} unless the model input is U8 or STRING'),
    ("tokens", {"inputs": [[1, 2, 3, 2**31]]}, 400,
     BAD + "I32 values, integers in [-2147483648, 2147483647]; Actual: 2147483648; input name: ids"),
    ("tokens", {"inputs": [[1, 2, 3, 4.5]]}, 400,
     BAD + "I32 values, integers in [-2147483648, 2147483647]; Actual: 4.5; input name: ids"),
])
def test_bad_requests_between_exact_ones_answer_their_errors(
    server: DropinServer, repo: Path, model: str, body: Any, status: int, message: str
) -> None:
    check_scale(server, repo, 10)
    expect(post(server, f"/v1/models/{model}:predict", body), status, message)
    check_scale(server, repo, 11)
    expect(post(server, f"/v1/models/{model}:predict", body), status, message)
    check_scale(server, repo, 12)


def check_tokens(server: DropinServer, repo: Path, batch: int, seed: int) -> None:
    ids = np.random.default_rng(seed).integers(-1000, 1000, (batch, 4)).astype(np.int32)
    want = reference(repo, "tokens", ids=ids)
    got = predict(server, "tokens", {"inputs": {"ids": ids.tolist()}})["outputs"]
    assert got == {"echo": want["echo"].tolist(), "total": want["total"].tolist()}


def check_dynamic(server: DropinServer, repo: Path, shape: tuple[int, int], seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    want = reference(repo, "dynamic", x=x)
    rows = predict(server, "dynamic", {"instances": x.tolist()})["predictions"]
    assert len(rows) == shape[0]
    np.testing.assert_array_equal(np.array([r["y"] for r in rows], np.float32), want["y"])
    np.testing.assert_array_equal(np.array([r["total"] for r in rows], np.float32), want["total"])


def test_a_dynamic_model_answers_right_as_its_learned_shape_changes(server: DropinServer, repo: Path) -> None:
    string = 'Could not parse instance content. Not valid ndarray detected - strings need {"b64": ...} unless the ' \
             "model input is U8 or STRING"
    for round_, batch in enumerate((1, 3, 1, 3, 1)):
        check_tokens(server, repo, batch, round_)
        check_tokens(server, repo, batch, round_ + 100)  # the same shape again: the one learned
        expect(post(server, "/v1/models/tokens:predict", {"inputs": [[1, 2, 3, 0.5]] * batch}), 400,
               BAD + "I32 values, integers in [-2147483648, 2147483647]; Actual: 0.5; input name: ids")
        expect(post(server, "/v1/models/tokens:predict", {"inputs": [[1, 2, 3, False]] * batch}), 400,
               BAD + "I32 numbers; Actual: false; input name: ids")
        expect(post(server, "/v1/models/tokens:predict", {"inputs": [[1, 2, 3]] * batch}), 400,
               f"Invalid input shape - Expected: (-1,4); Actual: ({batch},3); input name: ids")
        check_tokens(server, repo, batch, round_ + 200)
    for round_, shape in enumerate([(1, 2), (3, 5), (1, 2), (3, 5), (3, 2)]):
        check_dynamic(server, repo, shape, round_)
        expect(post(server, "/v1/models/dynamic:predict", {"instances": [["x"] * shape[1]] * shape[0]}), 400, string)
        expect(post(server, "/v1/models/dynamic:predict", {"instances": [[1e39] * shape[1]] * shape[0]}), 400,
               BAD + "FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: 1e+39; input name: x")
        check_dynamic(server, repo, shape, round_ + 100)
