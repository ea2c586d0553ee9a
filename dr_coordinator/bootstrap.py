"""The only place the coordinator's adapters are built from settings."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from energy.resilience import RetryPolicy, guarded_call
from energy.settings import Settings


def utility_filter(settings: Settings) -> list[str] | None:
    ids = [u.strip() for u in settings.dr.only_utility_ids.split(",") if u.strip()]
    return ids or None


def make_gateway(settings: Settings) -> Any:
    from dr_coordinator.adapters.bms_soap import SoapBmsGateway

    return SoapBmsGateway(settings.dr)


@dataclass
class ReportSender:
    """Posts a report to the utility's VTN (OpenADR 3 ``POST /reports``) with retries on transient errors."""

    token: str
    timeout_s: float = 5.0

    async def __call__(self, vtn_base_url: str, report: dict[str, Any]) -> None:
        from dr_coordinator.adapters.vtn_client import VtnClient

        client = VtnClient(vtn_base_url, self.token)
        try:
            await guarded_call(
                "utility_vtn_report",
                lambda: client.post_report(report),
                timeout_s=self.timeout_s * 3,
                retry=RetryPolicy(attempts=3, base_delay_s=0.3, max_delay_s=2.0),
            )
        finally:
            close = getattr(client, "aclose", None) or getattr(client, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result
