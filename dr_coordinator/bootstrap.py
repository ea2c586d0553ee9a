"""The only place the coordinator's adapters are built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from energy.settings import Settings


def utility_filter(settings: Settings) -> list[str] | None:
    ids = [u.strip() for u in settings.dr.only_utility_ids.split(",") if u.strip()]
    return ids or None


def make_gateway(settings: Settings) -> Any:
    from dr_coordinator.adapters.bms_soap import SoapBmsGateway

    return SoapBmsGateway(settings.dr)


@dataclass
class ReportSender:
    """Posts a report to a utility's VTN (OpenADR 3 ``POST /reports``); one client (breaker, retries) per VTN."""

    token: str
    client_name: str = "energy-platform"
    _clients: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, vtn_base_url: str, report: dict[str, Any]) -> None:
        from dr_coordinator.adapters.vtn_client import VtnClient

        client = self._clients.get(vtn_base_url)
        if client is None:
            client = self._clients[vtn_base_url] = VtnClient(vtn_base_url, self.token, client_name=self.client_name)
        await client.post_report(report)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
