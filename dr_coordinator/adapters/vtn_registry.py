"""One :class:`VtnClient` per utility, built from the utility's row (base URL, OpenADR version,
VEN credentials: bearer token or OAuth2 client credentials). Rebuilt when the row changes
(rotation), closed on stop. A utility without VEN credentials falls back to ``dr.vtn_token``.
Credentials are decrypted here, from the row (decision 0860)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dr_coordinator.adapters.ven_credentials import credentials_box, unseal
from dr_coordinator.adapters.vtn_client import OAuthClient, VtnClient
from energy.secretbox import SecretBox


@dataclass(frozen=True)
class VtnTarget:
    utility_id: str
    base_url: str
    version: str
    ven_name: str
    ven_auth: str
    credentials: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any, box: SecretBox | None = None) -> VtnTarget:
        """Raises ``SecretBoxError`` when the stored credentials do not open with the configured keys."""
        creds = unseal(
            box or credentials_box(), row["utility_id"], row["ven_credentials_encrypted"], row["ven_credentials"]
        )
        return cls(
            utility_id=row["utility_id"],
            base_url=row["vtn_base_url"],
            version=row["openadr_version"],
            ven_name=row["ven_name"],
            ven_auth=row["ven_auth"],
            credentials=creds,
        )

    def fingerprint(self) -> str:
        blob = json.dumps([self.base_url, self.version, self.ven_name, self.ven_auth, self.credentials], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


UTILITY_VTN_COLUMNS = (
    "u.utility_id, u.vtn_base_url, u.openadr_version, u.ven_name, u.ven_auth, u.ven_credentials,"
    " u.ven_credentials_encrypted"
)


class VtnClients:
    def __init__(self, fallback_token: str, timeout_s: float = 5.0) -> None:
        self.fallback_token = fallback_token
        self.timeout_s = timeout_s
        self._clients: dict[str, tuple[str, VtnClient]] = {}

    async def client_for(self, target: VtnTarget) -> VtnClient:
        fp = target.fingerprint()
        known = self._clients.get(target.utility_id)
        if known is not None and known[0] == fp:
            return known[1]
        if known is not None:
            await known[1].close()
        oauth = None
        token: str | None = None
        if target.ven_auth == "oauth2":
            c = target.credentials
            oauth = OAuthClient(c["client_id"], c["client_secret"], c.get("token_url"), c.get("scope"))
        else:
            token = target.credentials.get("token") or self.fallback_token
        client = VtnClient(
            target.base_url,
            token,
            self.timeout_s,
            client_name=target.ven_name,
            version="3.0.1" if target.version == "3.0.1" else "3.1",
            oauth=oauth,
        )
        self._clients[target.utility_id] = (fp, client)
        return client

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()
