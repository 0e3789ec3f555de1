"""The S3 source's tests run against a local S3-compatible server started here (moto's server
mode on a free port): nothing outside this machine is used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dropin_s3.testing import S3Server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()
