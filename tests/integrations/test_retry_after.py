"""Call sites on the one retry policy honour Retry-After against a real HTTP peer (decision 0840):
the VTN client (our side) and the utility simulator's notifier (the VTN's side of webhooks).
The hinted wait is far longer than the policy's own backoff, so only an honoured hint passes."""

from __future__ import annotations

import httpx
import pytest

from dr_coordinator.adapters.vtn_client import VtnClient, VtnRejectedError
from energy.resilience import RetryPolicy
from tests.integrations.test_vtn import BASE, event_body, new_program, vtn_url
from tests.waiting import wait_until


async def test_vtn_client_waits_as_long_as_retry_after_asks_then_succeeds(receiver):
    client = VtnClient(f"http://127.0.0.1:{receiver.port}{BASE}", "t", retry=RetryPolicy(3, 0.01, 2.0))
    try:
        receiver.statuses, receiver.retry_after = [429], "0.8"
        await client.post_report({"clientName": "x", "resources": []})
        assert len(receiver.requests) == 2
        gap = receiver.requests[1]["at"] - receiver.requests[0]["at"]
        assert 0.8 <= gap < 5, gap  # the hint; the policy alone would wait 10-20 ms
    finally:
        await client.close()


async def test_vtn_client_gives_up_at_once_on_a_refusal(receiver):
    client = VtnClient(f"http://127.0.0.1:{receiver.port}{BASE}", "t", retry=RetryPolicy(3, 0.01, 2.0))
    try:
        receiver.statuses = [422]
        with pytest.raises(VtnRejectedError):
            await client.post_report({"clientName": "x", "resources": []})
        assert len(receiver.requests) == 1
    finally:
        await client.close()


async def test_utility_notifier_honours_the_subscribers_retry_after(
    utility_sim, settings, receiver, utility_admin, uid
):
    token = settings.seed.utility_bearer_token.get_secret_value()
    bl = httpx.Client(base_url=vtn_url(utility_sim), headers={"Authorization": f"Bearer {token}"}, timeout=5)
    ven = VtnClient(vtn_url(utility_sim), token, timeout_s=5.0)
    try:
        await _notified_after_the_hint(bl, ven, receiver, utility_admin, uid)
    finally:
        bl.close()
        await ven.close()


async def _notified_after_the_hint(bl: httpx.Client, ven: VtnClient, receiver, utility_admin, uid: str) -> None:  # type: ignore[no-untyped-def]
    program_id = new_program(bl, uid)
    sub_id = await ven.subscribe(receiver.url, "t", program_id)
    receiver.statuses, receiver.retry_after = [429], "0.8"
    bl.post("/events", json=event_body(program_id, "throttled")).raise_for_status()
    requests = await receiver.wait_for(2)
    assert len(requests) == 2
    gap = requests[1]["at"] - requests[0]["at"]
    assert 0.8 <= gap < 5, gap  # the notifier's own backoff starts at 0.1 s
    deliveries = await wait_until(
        lambda: utility_admin.get("/_admin/deliveries", params={"subscription_id": sub_id}).json(),
        accept=lambda found: bool(found) and found[0]["outcome"] != "queued",
        timeout_s=10,
        what="the delivery's outcome",
        interval_s=0.05,
    )
    assert [(d["outcome"], d["attempts"]) for d in deliveries] == [("delivered", 2)]
