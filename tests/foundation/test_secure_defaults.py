"""Secure by default outside a laptop (issue 17, docs/decisions/0009-secure-defaults.md).

In staging and production every process refuses to start -- one line naming the setting,
non-zero exit, never listening -- when a secret is a development default, too short or missing,
or a dependency's connection is not encrypted; `energy seed` refuses and writes nothing; an API
started in production refuses a JWT signed with the development secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import jwt
import pytest

from api.passwords import hash_password
from energy.db.migrate import migrate
from energy.seed import dev_principals
from energy.settings import InsecureSettingsError, PostgresSettings, Settings, secret_fields, variable_name
from energy.stack.process import free_port
from energy.stack.servers import PostgresServer, Server
from tests.foundation.secure_servers import copy_pki, make_pki, port_open
from tests.waiting import wait_until_sync

# The published development values, written here by hand from the repository's settings modules.
DEV_TOKEN_SECRET = "local-dev-token-secret-change-me"
DEV_VALUES = {
    "ENERGY_POSTGRES__PASSWORD": "energy",
    "ENERGY_API__TOKEN_SECRET": DEV_TOKEN_SECRET,
    "ENERGY_SEED__UTILITY_BEARER_TOKEN": "local-utility-token",
    "ENERGY_SEED__UTILITY_HMAC_SECRET": "local-utility-hmac-secret",
    "ENERGY_DR__VTN_TOKEN": "local-ven-token",
    "ENERGY_DR__CREDENTIALS_KEY": "local-dev-ven-credentials-key-change-me",
    "ENERGY_FORECAST__WEATHER_API_KEY": "local-sim-key",
}
# Secrets without a default: the local stack runs without them, so "unset" is their development value.
UNSET_LOCALLY = ("ENERGY_REDIS__PASSWORD", "ENERGY_INFLUX__PASSWORD", "ENERGY_KAFKA__SASL_PASSWORD")
# Which command reads each secret: the process that must refuse to start.
READERS = {
    "ENERGY_POSTGRES__PASSWORD": ("api", "run"),
    "ENERGY_REDIS__PASSWORD": ("api", "run"),
    "ENERGY_INFLUX__PASSWORD": ("api", "run"),
    "ENERGY_API__TOKEN_SECRET": ("api", "run"),
    "ENERGY_API__TOKEN_PREVIOUS_SECRET": ("api", "run"),
    "ENERGY_KAFKA__SASL_PASSWORD": ("ingestion", "run"),
    "ENERGY_MQTT__PASSWORD": ("ingestion", "run"),
    "ENERGY_SEED__UTILITY_BEARER_TOKEN": ("seed",),
    "ENERGY_SEED__UTILITY_HMAC_SECRET": ("seed",),
    "ENERGY_DR__VTN_TOKEN": ("dr", "run"),
    "ENERGY_DR__CREDENTIALS_KEY": ("dr", "run"),
    "ENERGY_DR__CREDENTIALS_PREVIOUS_KEY": ("dr", "run"),
    "ENERGY_FORECAST__WEATHER_API_KEY": ("forecast", "run"),
}
TOKEN_KEY_ID = "k-2026-12"


def _real(n: int = 40) -> str:
    return secrets.token_urlsafe(n)[:n]


def production_env(environment: str = "production") -> dict[str, str]:
    """Settings a production pod could have: real secrets, TLS everywhere (pointed at 127.0.0.1)."""
    return {
        "ENERGY_ENVIRONMENT": environment,
        "ENERGY_POSTGRES__PASSWORD": _real(),
        "ENERGY_POSTGRES__SSL_MODE": "require",
        "ENERGY_REDIS__TLS": "true",
        "ENERGY_REDIS__PASSWORD": _real(),
        "ENERGY_INFLUX__URL": f"https://127.0.0.1:{free_port()}",
        "ENERGY_INFLUX__USERNAME": "energy-admin",
        "ENERGY_INFLUX__PASSWORD": _real(),
        "ENERGY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "ENERGY_KAFKA__SASL_USERNAME": "energy-services",
        "ENERGY_KAFKA__SASL_PASSWORD": _real(),
        "ENERGY_MQTT__TLS": "true",
        "ENERGY_FORECAST__WEATHER_PRIMARY_URL": "https://127.0.0.1:1/weatherapi",
        "ENERGY_FORECAST__WEATHER_SECONDARY_URL": "https://127.0.0.1:1/openmeteo",
        "ENERGY_FORECAST__WEATHER_API_KEY": _real(),
        "ENERGY_DR__VTN_TOKEN": _real(),
        "ENERGY_DR__CREDENTIALS_KEY": _real(48),
        "ENERGY_SEED__UTILITY_BEARER_TOKEN": _real(48),
        "ENERGY_SEED__UTILITY_HMAC_SECRET": _real(48),
        "ENERGY_API__TOKEN_SECRET": _real(48),
        "ENERGY_API__TOKEN_KEY_ID": TOKEN_KEY_ID,
    }


def _settings(env: dict[str, str]) -> Settings:
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings()


def _energy(args: tuple[str, ...], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the `energy` CLI as its own process with exactly these ENERGY_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_")}
    exe = Path(sys.executable).with_name("energy")
    argv = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "energy.cli", *args]
    return subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=timeout, check=False)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- the settings check, in process ------------------------------------------------------------


def test_production_settings_with_real_secrets_and_tls_are_accepted() -> None:
    settings = _settings(production_env())
    assert settings.environment == "production"
    assert settings.api.token_key_id == TOKEN_KEY_ID


def test_every_secret_setting_has_a_policy_and_a_reading_process() -> None:
    names = {variable_name(path) for path, policy, _ in secret_fields() if not policy.local_only}
    assert names == set(READERS), "a new secret needs a SecretPolicy and a line in READERS"
    local_only = {variable_name(path) for path, policy, _ in secret_fields() if policy.local_only}
    assert local_only == {"ENERGY_INGESTION__DEV_GATEWAY_KEY"}
    # Every SecretStr field of the settings is covered (none without a policy).
    assert len(secret_fields()) == len(READERS) + len(local_only)


def test_local_and_test_environments_keep_their_development_defaults() -> None:
    for environment in ("local", "test"):
        settings = _settings({"ENERGY_ENVIRONMENT": environment})
        assert settings.api.token_secret.get_secret_value() == DEV_TOKEN_SECRET


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENERGY_POSTGRES__SSL_MODE", "disable"),
        ("ENERGY_REDIS__TLS", "false"),
        ("ENERGY_KAFKA__SECURITY_PROTOCOL", "PLAINTEXT"),
        ("ENERGY_KAFKA__SECURITY_PROTOCOL", "SSL"),
        ("ENERGY_INFLUX__URL", "http://127.0.0.1:58086"),
        ("ENERGY_MQTT__TLS", "false"),
        ("ENERGY_FORECAST__WEATHER_PRIMARY_URL", "http://127.0.0.1:58103/weatherapi"),
        ("ENERGY_FORECAST__WEATHER_SECONDARY_URL", "http://127.0.0.1:58103/openmeteo"),
    ],
)
def test_a_dependency_without_tls_is_refused(environment: str, variable: str, value: str) -> None:
    env = {**production_env(environment), variable: value}
    with pytest.raises(InsecureSettingsError) as err:
        _settings(env)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(variable), err.value.problems


def test_mqtt_tls_is_not_required_when_ingestion_does_not_use_mqtt() -> None:
    env = {**production_env(), "ENERGY_MQTT__TLS": "false", "ENERGY_INGESTION__MQTT_ENABLED": "false"}
    assert _settings(env).mqtt.tls is False


@pytest.mark.parametrize(
    ("variable", "minimum"),
    [
        ("ENERGY_API__TOKEN_SECRET", 32),
        ("ENERGY_SEED__UTILITY_HMAC_SECRET", 32),
        ("ENERGY_SEED__UTILITY_BEARER_TOKEN", 32),
        ("ENERGY_POSTGRES__PASSWORD", 16),
        ("ENERGY_DR__VTN_TOKEN", 16),
        ("ENERGY_DR__CREDENTIALS_KEY", 32),
    ],
)
def test_a_short_secret_is_refused_and_one_at_the_minimum_is_accepted(variable: str, minimum: int) -> None:
    with pytest.raises(InsecureSettingsError) as err:
        _settings({**production_env(), variable: "x" * (minimum - 1)})
    assert err.value.problems == [f"{variable} is {minimum - 1} characters long; at least {minimum} are required"]
    _settings({**production_env(), variable: "x" * minimum})


def test_a_development_value_of_another_setting_is_refused_too() -> None:
    # Long enough, but published: the utility HMAC default used as the VTN token.
    with pytest.raises(InsecureSettingsError) as err:
        _settings({**production_env(), "ENERGY_DR__VTN_TOKEN": "local-utility-hmac-secret"})
    assert err.value.problems[0].startswith("ENERGY_DR__VTN_TOKEN holds a development default")


def test_the_development_gateway_key_is_not_needed_in_production() -> None:
    # Read only in local/test (the ingestion service upserts it there); production ignores it.
    settings = _settings({**production_env(), "ENERGY_INGESTION__DEV_GATEWAY_KEY": "dev-gateway-key-local"})
    assert settings.ingestion.dev_gateway_key.get_secret_value() == "dev-gateway-key-local"


# --- the evidence: a process per secret ------------------------------------------------------


def _bad_value_cases() -> list[tuple[str, dict[str, str | None]]]:
    cases: list[tuple[str, dict[str, str | None]]] = [(name, {name: value}) for name, value in DEV_VALUES.items()]
    cases += [(name, {name: None}) for name in UNSET_LOCALLY]
    # Optional secrets: set, but to a published value.
    cases.append(("ENERGY_MQTT__PASSWORD", {"ENERGY_MQTT__PASSWORD": "energy"}))
    cases.append(
        (
            "ENERGY_DR__CREDENTIALS_PREVIOUS_KEY",
            {"ENERGY_DR__CREDENTIALS_PREVIOUS_KEY": DEV_VALUES["ENERGY_DR__CREDENTIALS_KEY"]},
        )
    )
    cases.append(
        (
            "ENERGY_API__TOKEN_PREVIOUS_SECRET",
            {
                "ENERGY_API__TOKEN_PREVIOUS_SECRET": DEV_TOKEN_SECRET,
                "ENERGY_API__TOKEN_PREVIOUS_KEY_ID": "dev",
                "ENERGY_API__TOKEN_PREVIOUS_UNTIL": "2099-01-01T00:00:00Z",
            },
        )
    )
    return cases


@pytest.mark.parametrize(("variable", "change"), _bad_value_cases(), ids=[c[0] for c in _bad_value_cases()])
def test_a_process_with_a_development_secret_exits_non_zero_naming_it(
    variable: str, change: dict[str, str | None]
) -> None:
    env = production_env()
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    port = free_port()
    env["ENERGY_ENDPOINTS__API_PORT"] = str(port)
    out = _energy(READERS[variable], env)
    assert out.returncode != 0
    errors = _error_lines(out.stderr)
    assert len(errors) == 1, out.stderr
    assert variable in errors[0]
    assert "Traceback" not in out.stderr
    # Readiness never green: it never listened.
    assert not port_open("127.0.0.1", port)


# --- real servers: an API in production mode, and `energy seed` --------------------------------


@pytest.fixture
def tls_postgres(settings: Settings, private_server: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    """A private PostgreSQL that speaks TLS (production requires it), migrated."""
    folder = settings.stack.data_dir / "private" / f"pg-secure-{tmp_path.name[-12:]}"
    try:
        own = copy_pki(make_pki(tmp_path / "pki"), folder, owner="postgres")
        server = private_server(
            PostgresServer, extra_options=f"-c ssl=on -c ssl_cert_file={own.cert} -c ssl_key_file={own.key}"
        )
        pg = PostgresSettings(port=server.port, ssl_mode="require")
        asyncio.run(migrate(pg.dsn(), ssl="require"))
        yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _query(port: int, sql: str, *args: Any) -> Any:
    async def run() -> Any:
        pg = PostgresSettings(port=port, ssl_mode="require")
        conn = await asyncpg.connect(pg.dsn(), ssl="require", timeout=10)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _counts(port: int) -> dict[str, int]:
    tables = ("tenants", "facilities", "meters", "utilities", "users", "api_keys")
    return {t: int(_query(port, f"SELECT count(*) FROM {t}")) for t in tables}


def test_energy_seed_in_production_exits_non_zero_and_writes_nothing(tls_postgres: Server) -> None:
    env = {**production_env(), "ENERGY_POSTGRES__PORT": str(tls_postgres.port), "ENERGY_SEED__FACILITIES": "3"}
    for args in (("seed",), ("api", "seed-users")):
        out = _energy(args, env)
        assert out.returncode != 0, out.stdout
        assert "refused in ENERGY_ENVIRONMENT=production" in out.stderr
    empty = dict.fromkeys(("tenants", "facilities", "meters", "utilities", "users", "api_keys"), 0)
    assert _counts(tls_postgres.port) == empty
    # The same command and server with ENERGY_ENVIRONMENT=test does write: 3 facilities, 2 tenants
    # with 3 users and 1 API key each (decision 0501), one simulated utility. No history: this test's
    # stack is PostgreSQL only, and history goes to InfluxDB (decision 0820).
    out = _energy(("seed", "--history-days", "0"), {**env, "ENERGY_ENVIRONMENT": "test"})
    assert out.returncode == 0, out.stderr
    written = _counts(tls_postgres.port)
    assert written.pop("meters") >= 3
    assert written == {"tenants": 2, "facilities": 3, "utilities": 1, "users": 6, "api_keys": 2}


def _wait_http(url: str, deadline_s: float, proc: subprocess.Popen[str], log: Path) -> None:
    def answers() -> bool:
        assert proc.poll() is None, f"the API exited: {log.read_text()[-2000:]}"
        with urllib.request.urlopen(url, timeout=1):
            return True

    wait_until_sync(answers, timeout_s=deadline_s, what=f"{url} answering", interval_s=0.2, ignore=(OSError,))


def _get(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _forge(secret: str, kid: str, user_id: uuid.UUID, tenant_id: str) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "tid": tenant_id,
        "role": "operator",
        "aud": "energy-api",
        "iss": "energy-platform/production",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


def test_an_api_in_production_refuses_a_jwt_forged_with_the_development_secret(
    tls_postgres: Server, tmp_path: Path
) -> None:
    env = production_env()
    port = free_port()
    env.update({"ENERGY_POSTGRES__PORT": str(tls_postgres.port), "ENERGY_ENDPOINTS__API_PORT": str(port)})
    user_id, tenant_id, email, password = uuid.uuid4(), "tenant-x", "operator@tenant-x.test", _real(20)
    _query(tls_postgres.port, "INSERT INTO tenants (tenant_id, name) VALUES ($1, 'X')", tenant_id)
    _query(
        tls_postgres.port,
        "INSERT INTO users (user_id, tenant_id, email, role, password_hash) VALUES ($1, $2, $3, 'operator', $4)",
        user_id,
        tenant_id,
        email,
        hash_password(password),
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_")}
    exe = Path(sys.executable).with_name("energy")
    argv = [str(exe), "api", "run"] if exe.exists() else [sys.executable, "-m", "energy.cli", "api", "run"]
    log = (tmp_path / "api.log").open("w")  # a file, not a pipe: a full pipe would stall the API
    proc = subprocess.Popen(argv, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/healthz", 60, proc, tmp_path / "api.log")
        # A genuine login works: the refusals below are about the signature, not a broken API.
        status, body = _get(
            f"{url}/api/auth/token",
            {"Content-Type": "application/json"},
            f'{{"email": "{email}", "password": "{password}"}}'.encode(),
        )
        assert status == 200, body

        genuine = json.loads(body)["access_token"]
        header = jwt.get_unverified_header(genuine)
        claims = jwt.decode(genuine, env["ENERGY_API__TOKEN_SECRET"], algorithms=["HS256"], audience="energy-api")
        assert header["kid"] == TOKEN_KEY_ID and claims["iss"] == "energy-platform/production"
        assert claims["exp"] - claims["iat"] == 900  # 15 minutes
        status, _ = _get(f"{url}/api/auth/me", {"Authorization": f"Bearer {genuine}"})
        assert status == 200
        # Forged with the published development secret: with the real key id, and with the development one.
        for kid in (TOKEN_KEY_ID, "dev"):
            forged = _forge(DEV_TOKEN_SECRET, kid, user_id, tenant_id)
            status, body = _get(f"{url}/api/auth/me", {"Authorization": f"Bearer {forged}"})
            assert status == 401 and json.loads(body)["error"]["code"] == "invalid_token", (kid, body)
        # The sign-in pages carry no development hint.
        status, page = _get(f"{url}/dashboard")
        assert status == 200 and 'id="login-form"' in page
        status, facility_page = _get(f"{url}/dashboard/facility")
        assert status == 200 and 'id="login-form"' in facility_page
        page += facility_page
        assert 'id="dev-hint"' not in page and "dev-hint" not in page
        _, script = _get(f"{url}/static/app.js")
        for _kind, _tenant, _role, login, secret in dev_principals():
            assert login not in page + script and secret not in page + script
        assert "dev-password" not in page + script and "tenant-a" not in page + script
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
