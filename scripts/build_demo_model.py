#!/usr/bin/env python3
"""Build the bundled demo model, models/digits/1/model.{xml,bin}, without downloading anything.

It trains a small scikit-learn MLP on the handwritten digits that scikit-learn ships
(`sklearn.datasets.load_digits`: 1797 grayscale 8x8 images, pixel values 0..16, white digit on
black), rebuilds the same network with the OpenVINO opset API, checks that OpenVINO and
scikit-learn agree on the test set, and writes the IR plus a few sample images.

The served model takes images as a model server receives them:

    input  "image"          f32 [-1, 8, 8, 1]  NHWC, grayscale, pixel values 0..255
                                                (255 is the dataset's 16: pixel = value * 255 / 16)
    output "probabilities"  f32 [-1, 10]        softmax over the digits 0..9
    output "label"          i64 [-1]            argmax of the probabilities

Inside the graph: reshape to [-1, 64], divide by 255 (the MLP was trained on value / 16, which
is the same number), dense + relu, dense, softmax, and top-1 for the label.

Run from the repository root (the output is deterministic on a given machine: fixed seeds, fixed
split, weights kept in f32):

    python scripts/build_demo_model.py [--out models]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
HIDDEN = 32
PIXEL_MAX = 255.0  # what the served model expects for the dataset's maximum
DATASET_MAX = 16.0  # load_digits' maximum pixel value


def train() -> tuple[MLPClassifier, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = digits.data.astype(np.float64) / DATASET_MAX  # [n, 64] in [0, 1]
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=2000, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # fail loudly rather than ship a half-trained model
        clf.fit(x_train, y_train)
    return clf, x_train, x_test, y_train, y_test


def build_ov_model(clf: MLPClassifier) -> ov.Model:
    """The trained MLP as an OpenVINO graph that takes NHWC 0..255 images."""
    if list(clf.classes_) != list(range(10)):
        raise SystemExit(f"unexpected classes {clf.classes_}")
    if clf.out_activation_ != "softmax" or clf.activation != "relu":
        raise SystemExit(f"unexpected activations {clf.activation}/{clf.out_activation_}")
    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)

    image = ops.parameter([-1, 8, 8, 1], ov.Type.f32, name="image")
    image.output(0).get_tensor().set_names({"image"})
    flat = ops.reshape(image, ops.constant(np.array([-1, 64], np.int64)), special_zero=False)
    scaled = ops.divide(flat, ops.constant(np.float32(PIXEL_MAX)))
    hidden = ops.relu(ops.add(ops.matmul(scaled, ops.constant(w1), False, False), ops.constant(b1)))
    logits = ops.add(ops.matmul(hidden, ops.constant(w2), False, False), ops.constant(b2))
    probs = ops.softmax(logits, axis=1, name="probabilities")
    probs.output(0).get_tensor().set_names({"probabilities"})
    top = ops.topk(probs, k=1, axis=1, mode="max", sort="value", index_element_type="i64")
    label = ops.squeeze(top.output(1), ops.constant(np.array([1], np.int64)), name="label")
    label.output(0).get_tensor().set_names({"label"})

    model = ov.Model([probs.output(0), label.output(0)], [image], "digits")
    model.get_parameters()[0].set_layout(ov.Layout("NHWC"))
    return model


def to_images(x: np.ndarray) -> np.ndarray:
    """Rows of value/16 in [0, 1] to NHWC float images in 0..255."""
    return (x * PIXEL_MAX).astype(np.float32).reshape(-1, 8, 8, 1)


def write_samples(out_dir: Path, x_test: np.ndarray, y_test: np.ndarray, clf: MLPClassifier) -> list[dict]:
    """The first test image of each digit, as 8x8 grayscale PNGs (uint8 0..255) and an index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for digit in range(10):
        row = int(np.flatnonzero(y_test == digit)[0])
        pixels = np.rint(x_test[row] * PIXEL_MAX).clip(0, 255).astype(np.uint8).reshape(8, 8)
        name = f"digit_{digit}.png"
        if not cv2.imwrite(str(out_dir / name), pixels):
            raise SystemExit(f"could not write {out_dir / name}")
        predicted = int(clf.predict(pixels.reshape(1, 64).astype(np.float64) / PIXEL_MAX)[0])
        index.append({"file": name, "label": digit, "sklearn_prediction": predicted, "pixels": pixels.tolist()})
    (out_dir / "samples.json").write_text("[\n" + ",\n".join(json.dumps(item) for item in index) + "\n]\n")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository root (default: models)")
    parser.add_argument("--examples", type=Path, default=Path("examples/digits"), help="where the sample images go")
    args = parser.parse_args(argv)

    clf, _x_train, x_test, _y_train, y_test = train()
    accuracy = clf.score(x_test, y_test)
    print(f"sklearn MLP (64-{HIDDEN}-10, relu): test accuracy {accuracy:.4f} on {len(y_test)} images")

    model = build_ov_model(clf)
    xml = args.out / "digits" / "1" / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    bin_size = xml.with_suffix(".bin").stat().st_size
    print(f"wrote {xml} ({xml.stat().st_size} bytes) and model.bin ({bin_size} bytes)")
    if bin_size > 64 * 1024:
        raise SystemExit(f"model.bin is unexpectedly large: {bin_size} bytes")

    # Check the saved IR, not the in-memory graph: this is what the server will load.
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(to_images(x_test))
    probs = result[compiled.output("probabilities")]
    labels = result[compiled.output("label")]
    expected = clf.predict_proba(x_test)
    max_diff = float(np.abs(probs - expected).max())
    if not np.allclose(probs, expected, atol=1e-5):
        raise SystemExit(f"OpenVINO and sklearn disagree: max |diff| {max_diff:.3g}")
    if not np.array_equal(labels, clf.predict(x_test)):
        raise SystemExit("OpenVINO labels differ from sklearn's predict()")
    print(
        f"OpenVINO (f32) matches sklearn predict_proba on {len(y_test)} test images: "
        f"max |diff| {max_diff:.2e} (atol 1e-5); labels identical; "
        f"OpenVINO accuracy {float((labels == y_test).mean()):.4f}"
    )

    samples = write_samples(args.examples, x_test, y_test, clf)
    print(f"wrote {len(samples)} sample images to {args.examples}: "
          + ", ".join(f"{s['label']}->{s['sklearn_prediction']}" for s in samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
