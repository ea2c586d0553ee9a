"""Client-side TLS for every dependency: one way to build a verifying ``ssl.SSLContext``."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_ssl_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """Verifies the server's certificate and host name against ``ca_file`` (the system CAs when
    unset); with ``cert_file``/``key_file`` it also presents a client certificate (mutual TLS)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context
