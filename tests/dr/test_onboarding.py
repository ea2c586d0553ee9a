"""Utility onboarding through the CLI (real process, real PostgreSQL) and the admin API: secrets never
echoed nor audited, webhook token rotation with an overlap, removal, programs and enrollments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from energy.settings import Settings
from tests.dr.conftest import _CREATED_UTILITIES, api_server, dr_settings, soon

SECRETS = {
    "T_VEN": "ven-secret-token-123456",
    "T_HOOK": "hook-secret-token-123456",
    "T_HOOK2": "hook-secret-token-rotated-2",
    "T_HMAC": "hmac-secret-abcdef",
}


def energy(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("energy")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "energy.cli"]
    return subprocess.run(
        [*argv, "utility", *args], capture_output=True, text=True, timeout=120, env={**os.environ, **SECRETS}
    )


def ok(*args: str) -> Any:
    done = energy(*args)
    assert done.returncode == 0, done.stderr
    for secret in SECRETS.values():
        assert secret not in done.stdout + done.stderr
    return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else done.stdout


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Any, settings: Settings):
    async with api_server(dr_settings(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


def notification(eid: str) -> dict[str, Any]:
    start = soon(900).isoformat().replace("+00:00", "Z")  # more than the program's 600 s notice
    return {
        "objectType": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": eid,
            "programID": "peak",
            "targets": ["north"],
            "intervalPeriod": {"start": start, "duration": "PT10M"},
            "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
        },
    }


async def test_cli_onboards_a_utility_end_to_end(api, pg_pool, uid):
    utility_id = f"onb-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    added = ok(
        "add",
        utility_id,
        "--vtn-url",
        "http://127.0.0.1:9/openadr3/3.1.0",
        "--ven-token-env",
        "T_VEN",
        "--webhook-token-env",
        "T_HOOK",
    )
    assert added["openadr_version"] == "3.1" and added["ven_credentials_set"] and not added["hmac_set"]
    assert energy("add", utility_id, "--vtn-url", "http://x", "--webhook-token-env", "T_HOOK").returncode != 0
    ok("program", utility_id, "peak", "--notice-s", "600", "--max-duration-s", "14400")
    shown = ok("enroll", utility_id, "peak", "--facility", "fac-001", "--facility", "fac-002", "--group", "north")
    assert shown["programs"][0]["enrolled_facilities"] == 2 and shown["programs"][0]["notice_s"] == 600
    bad = energy("enroll", utility_id, "peak", "--facility", "fac-nope")
    assert bad.returncode != 0 and "fac-nope" in bad.stderr

    hook = f"/api/utility/{utility_id}/openadr3/notifications"
    old = {"Authorization": f"Bearer {SECRETS['T_HOOK']}"}
    new = {"Authorization": f"Bearer {SECRETS['T_HOOK2']}"}
    first = await api.post(hook, json=notification("e1"), headers=old)
    assert first.status_code == 200 and first.json()["facilities"] == ["fac-001", "fac-002"], first.text

    rotated = ok("rotate-token", utility_id, "--new-token-env", "T_HOOK2", "--overlap-s", "3600")
    assert rotated["webhook_token"] is None  # supplied by the caller: never echoed
    assert (await api.post(hook, json=notification("e1"), headers=old)).status_code == 200  # overlap: still valid
    assert (await api.post(hook, json=notification("e1"), headers=new)).status_code == 200
    ok("rotate-token", utility_id, "--new-token-env", "T_HOOK2", "--overlap-s", "0")
    assert (await api.post(hook, json=notification("e1"), headers=old)).status_code == 401
    assert (await api.post(hook, json=notification("e1"), headers=new)).status_code == 200

    ok("remove", utility_id)
    assert (await api.post(hook, json=notification("e1"), headers=new)).status_code == 401
    listed = {u["utility_id"]: u for u in ok("list")}
    assert listed[utility_id]["active"] is False

    audit = await pg_pool.fetch(
        "SELECT action, detail FROM utility_audit WHERE utility_id = $1 ORDER BY seq", utility_id
    )
    assert [a["action"] for a in audit] == [
        "added",
        "program_set",
        "enrolled",
        "webhook_token_rotated",
        "webhook_token_rotated",
        "removed",
    ]
    blob = json.dumps([a["detail"] for a in audit])
    assert all(s not in blob for s in SECRETS.values())
    assert "webhook_token" in json.loads(audit[0]["detail"])["secrets_set"]


async def test_hmac_is_refused_when_the_utility_has_no_secret_and_required_when_set(api, uid):
    import hashlib
    import hmac
    import time

    plain, signed = f"onb-plain-{uid}", f"onb-hmac-{uid}"
    _CREATED_UTILITIES.update({plain, signed})
    common = ("--vtn-url", "http://127.0.0.1:9/x", "--ven-token-env", "T_VEN", "--webhook-token-env", "T_HOOK")
    ok("add", plain, *common)
    ok("add", signed, *common, "--hmac-secret-env", "T_HMAC", "--hmac-required")
    ok("enroll", plain, "peak", "--facility", "fac-003", "--group", "north")
    ok("enroll", signed, "peak", "--facility", "fac-003", "--group", "north")
    body = json.dumps(notification("h1")).encode()
    stamp = str(int(time.time()))

    def signed_with(secret: str) -> dict[str, str]:
        mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"X-Signature": f"sha256={mac}", "X-Timestamp": stamp, "Content-Type": "application/json"}

    # No secret configured: a signature made with an empty key must not pass.
    empty = await api.post(f"/api/utility/{plain}/openadr3/notifications", content=body, headers=signed_with(""))
    assert empty.status_code == 401
    bearer = {"Authorization": f"Bearer {SECRETS['T_HOOK']}", "Content-Type": "application/json"}
    hook = f"/api/utility/{signed}/openadr3/notifications"
    assert (await api.post(hook, content=body, headers=bearer)).status_code == 401  # HMAC required
    assert (await api.post(hook, content=body, headers=signed_with(SECRETS["T_HMAC"]))).status_code == 200


async def test_admin_api_needs_the_platform_admin_role(api, settings):
    login = await api.post(
        "/api/auth/token",
        json={"email": "operator@tenant-a.example", "password": "operator-tenant-a-dev-password"},
    )
    if login.status_code != 200:  # the dev users come from `energy seed`
        from energy.seed import seed_api_principals

        await seed_api_principals(settings)
        login = await api.post(
            "/api/auth/token",
            json={"email": "operator@tenant-a.example", "password": "operator-tenant-a-dev-password"},
        )
    token = login.json()["access_token"]
    resp = await api.get("/api/admin/utilities", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    assert (await api.get("/api/admin/utilities")).status_code == 401
