"""TLS for both ports: a server certificate, and optionally client certificates checked against
a CA (mutual TLS). The files are read once at start-up; a bad file stops the server with why."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from .config import ConfigError


@dataclass(frozen=True)
class TlsSettings:
    cert: Path  # PEM server certificate chain
    key: Path  # PEM private key
    client_ca: Path | None = None  # PEM CA bundle: when set, clients must present a certificate it signed

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        cert, key = self._read(self.cert, "certificate"), self._read(self.key, "key")
        ca = self._read(self.client_ca, "client CA") if self.client_ca else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.client_ca:
                context.load_verify_locations(self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"invalid TLS files ({self.cert}, {self.key}): {exc}") from None
        return context
