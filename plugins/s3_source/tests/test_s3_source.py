"""The S3 source on its own (in this process, against the local S3 server): base path spellings,
the endpoint from the environment, and the rules for when a version is downloaded and served."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dropin.backend import Backend
from dropin.registry import Registry
from dropin_openvino.backend import OpenVINOBackend
from dropin_openvino.modelgen import scale_model
from dropin_s3 import location
from dropin_s3.source import S3Source
from dropin_s3.testing import S3Server, s3_env


@pytest.mark.parametrize(
    ("base_path", "bucket", "prefix", "endpoint"),
    [
        ("s3://models/resnet", "models", "resnet/", None),
        ("s3://models/team/resnet/", "models", "team/resnet/", None),
        ("s3://models", "models", "", None),
        ("s3://minio.local:9000/models/resnet", "models", "resnet/", "minio.local:9000"),
        ("s3://10.0.0.7:9000/models", "models", "", "10.0.0.7:9000"),
    ],
)
def test_base_path_spellings(base_path: str, bucket: str, prefix: str, endpoint: str | None) -> None:
    assert location.parse(base_path) == location.S3Location(bucket, prefix, endpoint)


def test_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("S3_ENDPOINT", "S3_USE_HTTPS"):
        monkeypatch.delenv(name, raising=False)
    plain, with_endpoint = location.parse("s3://b/m"), location.parse("s3://minio:9000/b/m")
    assert location.endpoint_url(plain) is None  # boto3's own: AWS_ENDPOINT_URL, else AWS
    assert location.endpoint_url(with_endpoint) == "https://minio:9000"
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    assert location.endpoint_url(with_endpoint) == "http://minio:9000"
    monkeypatch.setenv("S3_ENDPOINT", "ceph:7480")  # wins over the path's, as in OVMS
    assert location.endpoint_url(with_endpoint) == "http://ceph:7480"
    monkeypatch.setenv("S3_ENDPOINT", "https://s3.example:443")
    assert location.endpoint_url(plain) == "https://s3.example:443"


def test_no_bucket_is_a_read_error_naming_the_path() -> None:
    with pytest.raises(OSError, match="no bucket name in 's3:///m'"):
        S3Source("s3:///m").versions()


@pytest.fixture
def source_for(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name, value in s3_env(S3_ENDPOINT=s3.url).items():
        monkeypatch.setenv(name, value)
    backends: Registry[Backend] = Registry("backend", Backend)
    backends.add("openvino", OpenVINOBackend)  # only its claims (file names) are asked
    monkeypatch.setattr(S3Source, "backends", backends)
    monkeypatch.setattr(S3Source, "cache_root", tmp_path / "cache")
    monkeypatch.setattr("dropin_s3.source.FIRST_LISTING_PAUSE_SECONDS", 0.05)
    monkeypatch.setattr("dropin_s3.cache.SUPERSEDED_SECONDS", 0.0)  # removed at once, to be seen here
    return lambda bucket: S3Source(f"s3://{bucket}/m")


def test_a_version_is_served_once_complete_and_listed_unchanged_twice(s3: S3Server, source_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.bucket()
    source = source_for(bucket)
    with pytest.raises(FileNotFoundError, match="no objects under"):
        source.versions()  # an empty prefix: the base path does not exist
    one, two = scale_model(tmp_path / "v1", factor=2.0), scale_model(tmp_path / "v2", factor=3.0)
    s3.upload(bucket, "m/1", one)
    served = source.versions()  # the first listing is repeated before downloading
    assert list(served) == [1] and (served[1] / "model.bin").read_bytes() == (one / "model.bin").read_bytes()

    s3.upload(bucket, "m/2", two, only=("model.xml",))
    assert list(source.versions()) == [1]
    assert list(source.versions()) == [1]  # unchanged, but no backend claims an .xml without its .bin
    s3.upload(bucket, "m/2", two, only=("model.bin",))
    assert list(source.versions()) == [1]  # complete now, but listed once only
    served = source.versions()
    assert sorted(served) == [1, 2] and (served[2] / "model.bin").read_bytes() == (two / "model.bin").read_bytes()
    first = served[2]

    three = tmp_path / "v3"  # version 2 with new weights (the same layout: factor 5 instead of 3)
    (three / "model.xml").parent.mkdir()
    (three / "model.xml").write_bytes((two / "model.xml").read_bytes())
    (three / "model.bin").write_bytes((scale_model(tmp_path / "v5", factor=5.0) / "model.bin").read_bytes())
    changing = time.monotonic()
    s3.upload(bucket, "m/2", three, only=("model.bin",))  # a changed object (new ETag)
    assert source.versions()[2] == first  # the previous download serves until the change is listed twice
    changed = source.versions()[2]
    assert changed != first and source.fingerprint(changed) != source.fingerprint(first)
    assert (changed / "model.bin").read_bytes() == (three / "model.bin").read_bytes()
    assert (changed / "model.xml").read_bytes() == (two / "model.xml").read_bytes()
    # only the changed object is downloaded again; the unchanged one is kept from the previous download
    assert [r.path for r in S3Server.downloads(s3.seen(bucket, since=changing))] == [f"/{bucket}/m/2/model.bin"]
    assert not first.exists()  # superseded downloads leave the cache

    s3.delete(bucket, "m/2")
    assert list(source.versions()) == [1] and not changed.exists()


def test_keys_that_would_leave_the_version_directory_are_ignored(s3: S3Server, source_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", scale_model(tmp_path / "v1"))
    s3.client.put_object(Bucket=bucket, Key="m/1/../../escape.txt", Body=b"x")
    s3.client.put_object(Bucket=bucket, Key="m/1/sub//twice.txt", Body=b"x")
    served = S3Source.versions(source_for(bucket))
    assert sorted(p.name for p in served[1].iterdir()) == ["model.bin", "model.xml"]
    assert not list((tmp_path / "cache").rglob("escape.txt"))
