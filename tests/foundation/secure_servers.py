"""Private servers configured like production: TLS with our own test CA, and passwords.

Used by test_secure_connections.py to prove the clients' TLS/AUTH settings against real servers.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from energy.stack.servers import InfluxServer, MosquittoServer, RedisServer

PASSWORD = "s3cret-for-tests"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder: Path, name: str = "test") -> Pki:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    subj = f"/CN={name}-ca"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", subj, cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=folder)  # fmt: skip
    for f in folder.iterdir():
        f.chmod(0o644)
    (folder / "server.key").chmod(0o600)
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")


def copy_pki(pki: Pki, folder: Path, owner: str | None = None) -> Pki:
    """The server's copy, readable by the user the server runs as."""
    folder.mkdir(parents=True, exist_ok=True)
    out = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    for src, dst in zip((pki.ca, pki.cert, pki.key), (out.ca, out.cert, out.key), strict=True):
        shutil.copy(src, dst)
        if owner:
            shutil.chown(dst, owner, owner)
    out.key.chmod(0o600)
    return out


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class TlsRedisServer(RedisServer):
    """TLS only (no plain port) and an AUTH password, like ElastiCache with transit encryption."""

    pki: Pki | None = None
    password: str = PASSWORD

    def launch(self) -> None:
        assert self.pki is not None
        self.extra_args = (
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.pki.cert),
            "--tls-key-file", str(self.pki.key), "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", "no", "--requirepass", self.password,
        )  # fmt: skip
        super().launch()

    def answers(self) -> bool:
        return port_open(self.host, self.port)


@dataclass
class TlsMosquittoServer(MosquittoServer):
    """A TLS listener that refuses anonymous clients (password file)."""

    pki: Pki | None = None
    username: str = "ingestion"
    password: str = PASSWORD

    def launch(self) -> None:
        assert self.pki is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        own = copy_pki(self.pki, self.dir / "pki")  # the base launch hands the folder to mosquitto
        self.password_file = self.dir / "passwords"
        self.password_file.touch(mode=0o600)
        subprocess.run(["mosquitto_passwd", "-b", str(self.password_file), self.username, self.password],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        self.listener_options = (f"cafile {own.ca}", f"certfile {own.cert}", f"keyfile {own.key}")
        super().launch()

    def answers(self) -> bool:
        return port_open(self.host, self.port)


@dataclass
class TlsInfluxServer(InfluxServer):
    """https with our CA and auth-enabled, with one admin user (Timestream for InfluxDB's v1 API)."""

    pki: Pki | None = None
    username: str = "energy"
    password: str = PASSWORD

    def launch(self) -> None:
        assert self.pki is not None
        self.http_options = (
            "auth-enabled = true",
            "https-enabled = true",
            f'https-certificate = "{self.pki.cert}"',
            f'https-private-key = "{self.pki.key}"',
        )
        super().launch()

    def _context(self) -> ssl.SSLContext:
        assert self.pki is not None
        return ssl.create_default_context(cafile=str(self.pki.ca))

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"https://{self.host}:{self.port}/ping", timeout=1, context=self._context()
            ) as r:
                return int(r.status) == 204
        except OSError:
            return False

    def query(self, q: str, as_user: bool = True) -> str:
        data = urllib.parse.urlencode({"q": q}).encode()
        req = urllib.request.Request(f"https://{self.host}:{self.port}/query", data=data, method="POST")
        if as_user:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=10, context=self._context()) as resp:
            return str(resp.read().decode())

    def provision(self) -> None:
        # The first user may be created without credentials; it must be an admin.
        pw = self.password.replace("'", "\\'")
        try:
            self.query(f"CREATE USER \"{self.username}\" WITH PASSWORD '{pw}' WITH ALL PRIVILEGES", as_user=False)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:  # 401: a user exists already (provisioned before)
                raise
        super().provision()
