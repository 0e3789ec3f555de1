"""The local cache of downloaded versions: a restart downloads nothing again, and a process
killed in the middle of a download never leaves a half version to be served."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np

from dropin_openvino.modelgen import F32_CONFIG, run_openvino, scale_model
from dropin_s3.testing import S3Server, s3_env

X = np.arange(12, dtype=np.float32).reshape(1, 3, 4)


def _serve(dropin_server, s3: S3Server, bucket: str, cache: Path):  # type: ignore[no-untyped-def]
    return dropin_server(
        "--model_name", "m", "--model_path", f"s3://{bucket}/m", "--plugin_config", F32_CONFIG,
        "--s3_cache_dir", str(cache), env=s3_env(S3_ENDPOINT=s3.url),
    )


def test_a_restart_serves_from_the_cache_without_downloading_again(  # type: ignore[no-untyped-def]
    s3: S3Server, dropin_server, tmp_path: Path
) -> None:
    bucket, cache = s3.bucket(), tmp_path / "cache"
    model = scale_model(tmp_path / "model", factor=7.0)
    s3.upload(bucket, "m/1", model)
    first = _serve(dropin_server, s3, bucket, cache)
    first.wait_for("m", 1)
    assert len(S3Server.downloads(s3.seen(bucket))) == 2  # model.xml and model.bin
    assert first.stop() == 0

    restarted = time.monotonic()
    second = _serve(dropin_server, s3, bucket, cache)
    second.wait_for("m", 1)
    np.testing.assert_array_equal(second.client.predict("m", {"x": X})["y"], run_openvino(model, {"x": X})["y"])
    since = s3.seen(bucket, since=restarted)
    assert S3Server.listings(since) and not S3Server.downloads(since)


def test_a_process_killed_mid_download_leaves_no_half_version(  # type: ignore[no-untyped-def]
    s3: S3Server, dropin_server, tmp_path: Path
) -> None:
    bucket, cache = s3.bucket(), tmp_path / "cache"
    model = scale_model(tmp_path / "model", factor=9.0)
    s3.upload(bucket, "m/1", model)
    s3.slow[f"/{bucket}/m/1/model.xml"] = 30.0  # model.bin is downloaded, then model.xml hangs
    try:
        killed = _serve(dropin_server, s3, bucket, cache)
        deadline = time.monotonic() + 20
        while not any(r.path.endswith("model.xml") for r in S3Server.downloads(s3.seen(bucket))):
            assert time.monotonic() < deadline, killed.log
            time.sleep(0.05)
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(10)
    finally:
        s3.slow.clear()
    published = [p for p in cache.glob("*/*") if not p.name.startswith(".")]
    assert published == [], published  # only the temporary download directory is left
    assert [p.name for p in cache.glob("*/.download-*/*")] == ["model.bin"]  # what it had got so far

    again = _serve(dropin_server, s3, bucket, cache)
    again.wait_for("m", 1)
    np.testing.assert_array_equal(again.client.predict("m", {"x": X})["y"], run_openvino(model, {"x": X})["y"])
    (version,) = [p for p in cache.glob("*/*") if not p.name.startswith(".")]
    for name in ("model.xml", "model.bin"):
        assert (version / name).read_bytes() == (model / name).read_bytes()
