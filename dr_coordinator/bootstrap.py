"""The only place the coordinator's adapters are built from settings."""

from __future__ import annotations

from typing import Any

from energy.settings import Settings


def utility_filter(settings: Settings) -> list[str] | None:
    ids = [u.strip() for u in settings.dr.only_utility_ids.split(",") if u.strip()]
    return ids or None


def make_gateway(settings: Settings) -> Any:
    from dr_coordinator.adapters.bms_soap import SoapBmsGateway

    return SoapBmsGateway(settings.dr)


class ReportSender:
    """Hands a report to a utility's VTN with that utility's client (version, credentials, breaker).

    One report per event: after a failed attempt (which may have reached the VTN, since a POST has
    no idempotency key) the VTN's reports for the event and our client name are read first, and an
    existing one is replaced with PUT instead of a second POST.
    """

    def __init__(self, fallback_token: str, timeout_s: float = 5.0) -> None:
        from dr_coordinator.adapters.vtn_registry import VtnClients

        self.clients = VtnClients(fallback_token, timeout_s)

    async def __call__(self, target: Any, report: dict[str, Any], after_failure: bool = False) -> None:
        client = await self.clients.client_for(target)
        if after_failure:
            existing = await client.find_reports(report["eventID"], report.get("clientName"))
            if existing:
                await client.put_report(str(existing[0]["id"]), report)
                return
        await client.post_report(report)

    async def close(self) -> None:
        await self.clients.close()
