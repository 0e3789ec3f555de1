"""Where a model lives in S3, and the client that reaches it, configured as OVMS and KServe do.

Two spellings of a base path, as OVMS reads them:

- `s3://bucket/prefix`: the endpoint comes from the environment (or AWS itself);
- `s3://host:port/bucket/prefix`: the endpoint is `host:port` (HTTPS unless `S3_USE_HTTPS=0`).

The environment, in the order it wins:

- `S3_ENDPOINT` (OVMS, KServe): `http://host:port`, `https://host:port` or `host:port`;
- the `host:port` of the base path;
- `AWS_ENDPOINT_URL` (read by boto3 itself), else AWS's own endpoint for the region.

`S3_USE_HTTPS=0` makes a scheme-less endpoint plain HTTP, `S3_VERIFY_SSL=0` turns certificate
checks off (KServe's storage initializer reads both). Credentials and region are boto3's default
chain (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`, the shared
files, IAM roles); `AWS_REGION` is read as well as boto3's `AWS_DEFAULT_REGION`. With no
credentials at all requests go unsigned (public buckets), as OVMS does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

SCHEME = "s3://"
# OVMS's form with an endpoint: s3://host:port/bucket[/prefix]
_WITH_ENDPOINT = re.compile(r"s3://([0-9A-Za-z.-]+):([0-9]+)/([^/]+)/?(.*)")

# A listing or download that cannot reach the endpoint gives up after this long, so that a poll
# never hangs: the next poll tries again.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "models/resnet/" (always ending with "/")
    endpoint: str | None  # host:port from the base path, None when it names none

    def __str__(self) -> str:
        where = f"{self.endpoint}/" if self.endpoint else ""
        return f"{SCHEME}{where}{self.bucket}/{self.prefix}"


def parse(base_path: str) -> S3Location:
    """An `s3://` base path in either spelling; ValueError naming what is wrong."""
    if not base_path.startswith(SCHEME):
        raise ValueError(f"{base_path!r} is not an s3:// path")
    endpoint = None
    match = _WITH_ENDPOINT.fullmatch(base_path)
    if match:
        endpoint = f"{match.group(1)}:{match.group(2)}"
        bucket, prefix = match.group(3), match.group(4)
    else:
        bucket, _, prefix = base_path[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket name in {base_path!r}: expected s3://bucket/prefix or s3://host:port/bucket/prefix")
    prefix = prefix.strip("/")
    return S3Location(bucket, f"{prefix}/" if prefix else "", endpoint)


def _off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def endpoint_url(location: S3Location) -> str | None:
    """The endpoint URL to use, or None to leave it to boto3 (AWS_ENDPOINT_URL, then AWS)."""
    endpoint = os.environ.get("S3_ENDPOINT") or location.endpoint
    if not endpoint:
        return None
    if endpoint.startswith(("http://", "https://")):
        return endpoint
    return f"{'http' if _off('S3_USE_HTTPS') else 'https'}://{endpoint}"


def make_client(location: S3Location) -> Any:
    """A boto3 S3 client for `location` (imported here: dropin imports the plugin at start-up)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
    signed = session.get_credentials() is not None
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": 2, "mode": "standard"},
        # path-style addressing works with every S3-compatible server (MinIO, Ceph, moto)
        s3={"addressing_style": "path"} if endpoint_url(location) else {},
        **({} if signed else {"signature_version": UNSIGNED}),
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url(location),
        verify=not _off("S3_VERIFY_SSL"),
        config=config,
    )
