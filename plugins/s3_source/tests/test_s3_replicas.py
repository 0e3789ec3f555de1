"""Three dropin processes on one bucket, as three replicas of a Deployment would run: a version
uploaded file by file is never loaded half-uploaded and all three converge on it; a changed
object reloads everywhere; a version deleted from the bucket retires everywhere; what a poll
costs in S3 requests."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dropin.testing.server import DropinServer
from dropin_openvino.modelgen import F32_CONFIG, run_openvino, scale_model
from dropin_s3.testing import S3Server, s3_env

POLL_SECONDS = 1.0  # --file_system_poll_wait_seconds, the default
X = np.arange(12, dtype=np.float32).reshape(1, 3, 4)


def _until(check, since: float, timeout: float = 30.0) -> float:  # type: ignore[no-untyped-def]
    """Wait until `check()` is true; the time from `since` (time.monotonic()) until then."""
    while not check():
        if time.monotonic() - since > timeout:
            raise TimeoutError(f"{check} still false after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - since


def _answers(replica: DropinServer, version_dir: Path) -> bool:
    try:
        got = replica.client.predict("m", {"x": X})["y"]
    except Exception:
        return False
    return bool(np.array_equal(got, run_openvino(version_dir, {"x": X})["y"]))


def test_three_replicas_converge_on_uploads_changes_and_deletions(  # type: ignore[no-untyped-def]
    s3: S3Server, dropin_server, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    one = scale_model(tmp_path / "v1", factor=2.0)
    two = scale_model(tmp_path / "v2", factor=3.0)
    changed = scale_model(tmp_path / "v2b", factor=5.0)
    s3.upload(bucket, "m/1", one)
    replicas = [
        dropin_server(
            "--model_name", "m", "--model_path", f"s3://127.0.0.1:{s3.port}/{bucket}/m", "--plugin_config", F32_CONFIG,
            "--file_system_poll_wait_seconds", str(POLL_SECONDS), "--s3_cache_dir", str(tmp_path / f"cache{i}"),
            env=s3_env(),
        )
        for i in range(3)
    ]
    for replica in replicas:
        replica.wait_for("m", 1)
        assert _answers(replica, one)

    # steady state: one listing per replica and poll, nothing else
    started = time.monotonic()
    time.sleep(5 * POLL_SECONDS)
    quiet = s3.seen(bucket, since=started)
    assert not S3Server.downloads(quiet) and len(quiet) == len(S3Server.listings(quiet))
    per_poll = len(quiet) / 3 / ((time.monotonic() - started) / POLL_SECONDS)
    assert 0.3 <= per_poll <= 1.2, per_poll  # a rescan starts a poll period after the last one ended: fewer under load
    print(f"\nS3 requests per model, replica and poll (steady state): {per_poll:.2f}")

    # the .xml alone: no backend can load it, so no replica downloads or registers version 2
    s3.upload(bucket, "m/2", two, only=("model.xml",))
    time.sleep(3 * POLL_SECONDS)
    for replica in replicas:
        assert sorted(replica.client.status("m")) == [1] and _answers(replica, one)
        replica.wait_for_log(r"version 2: no backend can load its files yet \(model.xml\)")
    uploaded = time.monotonic()
    s3.upload(bucket, "m/2", two, only=("model.bin",))
    converged = [_until(lambda r=replica: _answers(r, two), uploaded) for replica in replicas]
    print(f"replicas serving an uploaded version, since the upload: {', '.join(f'{t:.2f} s' for t in converged)}")
    assert max(converged) < 4 * POLL_SECONDS + 5, converged  # two polls, the download, the re-check and the load
    for replica in replicas:
        replica.wait_for("m", 1, "END")
    assert len(S3Server.downloads(s3.seen(bucket, since=uploaded))) == 3 * 2  # each replica: .xml and .bin, once

    # a changed object (new ETag) reloads the version everywhere
    uploaded = time.monotonic()
    s3.upload(bucket, "m/2", changed, only=("model.bin",))
    reloaded = [_until(lambda r=replica: _answers(r, changed), uploaded) for replica in replicas]
    print(f"replicas serving a changed object, since the upload: {', '.join(f'{t:.2f} s' for t in reloaded)}")

    # deleted from the bucket: version 2 retires everywhere, version 1 (still cached) serves again
    deleted = time.monotonic()
    s3.delete(bucket, "m/2")
    for replica in replicas:
        replica.wait_for("m", 2, "END", timeout=20)
        replica.wait_for("m", 1)
        assert _answers(replica, one)
    print(f"replicas back on version 1 after a deletion: {time.monotonic() - deleted:.2f} s (all three)")
    assert not S3Server.downloads(s3.seen(bucket, since=deleted))  # version 1 came from the cache
