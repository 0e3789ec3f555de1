"""Raw HTTP for tests of the REST API: one request on a fresh TCP connection (http.client, no
retries, nothing hidden), the reply's status, body and content type as the server sent them."""

from __future__ import annotations

import http.client as httpclient
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import DropinServer


class Reply:
    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The message of an error reply (`{"error": message}`, JSON)."""
        assert self.content_type.startswith("application/json"), self.content_type
        data = self.json
        assert list(data) == ["error"], data
        return str(data["error"])


def http(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """One request on a fresh TCP connection (http.client, no retries, nothing hidden)."""
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunked = hasattr(body, "__next__")
        if body is not None and not isinstance(body, (bytes, str)) and not chunked:
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return Reply(response.status, response.read(), response.getheader("Content-Type", ""))
    finally:
        conn.close()


def get(server: DropinServer, path: str) -> Reply:
    return http(server.rest_port, "GET", path)


def post(server: DropinServer, path: str, body: Any) -> Reply:
    return http(server.rest_port, "POST", path, body)
