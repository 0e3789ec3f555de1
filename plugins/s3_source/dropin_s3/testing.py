"""A local S3-compatible server for the S3 source's tests (`S3Server`): moto's server mode on a
free port, in this process, behind a thin WSGI layer that records every request (to count what a
poll costs) and can slow some answers down or answer them as AWS does to an unknown access key."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import urllib3
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from dropin.testing.server import free_port

REGION = "us-east-1"
# the key the dropin processes sign with; moto accepts any key unless told otherwise (below)
GOOD_KEY = "AKIADROPINTESTGOOD"


class _Quiet(MotoRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002  (werkzeug's name)
        pass  # the tests count requests themselves; a line per request would drown the output


_DENIED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InvalidAccessKeyId</Code>
<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>"""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # /bucket/key
    query: str
    at: float  # time.monotonic()


class S3Server:
    """moto's S3 over HTTP (or HTTPS with a self-signed certificate) on 127.0.0.1:<free port>."""

    def __init__(self, port: int = 0, https: bool = False) -> None:
        self.port = port or free_port()  # the same port again: a server that was down comes back
        self.requests: list[Request] = []
        self.slow: dict[str, float] = {}  # a GET whose path ends with this waits that many seconds
        self.denied_keys: set[str] = set()  # access keys answered 403 InvalidAccessKeyId
        app = DomainDispatcherApplication(create_backend_app)

        def recorded(environ: dict[str, Any], start_response: Any) -> Any:
            method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
            self.requests.append(Request(method, path, environ.get("QUERY_STRING", ""), time.monotonic()))
            auth = environ.get("HTTP_AUTHORIZATION", "")
            if any(f"Credential={key}/" in auth for key in self.denied_keys):
                start_response("403 Forbidden", [("Content-Type", "application/xml")])
                return [_DENIED]
            for suffix, seconds in self.slow.items():
                if method == "GET" and path.endswith(suffix):
                    time.sleep(seconds)
            return app(environ, start_response)

        self.server = make_server(
            "127.0.0.1", self.port, recorded, threaded=True, request_handler=_Quiet,
            ssl_context="adhoc" if https else None,  # a self-signed certificate made on the spot
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        if https:  # the tests' own client does not check the certificate it was just given
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.client = boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=GOOD_KEY, aws_secret_access_key="x",
            verify=False,
        )

    def bucket(self) -> str:
        """A new, empty bucket (moto's state is shared by every test in the process)."""
        name = f"models-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, bucket: str, prefix: str, directory: Path, only: tuple[str, ...] | None = None) -> None:
        """The files of `directory` as `prefix/<file name>` (all, or those named in `only`)."""
        for path in sorted(directory.iterdir()):
            if only is None or path.name in only:
                self.client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())

    def delete(self, bucket: str, prefix: str) -> None:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
        for obj in listed:
            self.client.delete_object(Bucket=bucket, Key=obj["Key"])

    def seen(self, bucket: str, since: float = 0.0) -> list[Request]:
        """The requests about `bucket` made at or after `since`."""
        return [r for r in list(self.requests) if r.path.startswith(f"/{bucket}") and r.at >= since]

    @staticmethod
    def listings(requests: list[Request]) -> list[Request]:
        return [r for r in requests if r.method == "GET" and "list-type=2" in r.query]

    @staticmethod
    def downloads(requests: list[Request]) -> list[Request]:
        return [r for r in requests if r.method == "GET" and "list-type=2" not in r.query]

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


def s3_env(**extra: str) -> dict[str, str]:
    """The environment of a dropin process that reads our S3: credentials as KServe sets them,
    and nothing from this machine's AWS files."""
    return {
        "AWS_ACCESS_KEY_ID": GOOD_KEY,
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "S3_USE_HTTPS": "0",
        **extra,
    }
