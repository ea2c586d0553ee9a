"""Utility onboarding payloads (admin API and ``energy utility`` CLI). Secrets are write-only:
no output model carries one."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

UTILITY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
PROGRAM_ID = r"^[A-Za-z0-9_-]{1,128}$"
GROUP = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UtilityIn(_Strict):
    utility_id: str = Field(pattern=UTILITY_ID)
    name: str = Field(min_length=1, max_length=200)
    vtn_base_url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    openadr_version: Literal["3.0.1", "3.1"] = "3.1"
    ven_name: str = Field(default="energy-platform", min_length=1, max_length=128)
    ven_auth: Literal["bearer", "oauth2"] = "bearer"
    ven_token: SecretStr | None = Field(default=None, description="bearer token for the VTN (ven_auth=bearer)")
    oauth_client_id: str | None = Field(default=None, min_length=1, max_length=4096)
    oauth_client_secret: SecretStr | None = None
    oauth_token_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2000)
    webhook_token: SecretStr = Field(description="bearer token the utility's VTN sends to our webhook; stored hashed")
    hmac_secret: SecretStr | None = Field(default=None, description="optional HMAC-SHA256 signing secret")
    hmac_required: bool = False
    baseline_method: Literal["forecast", "caiso_10in10", "pjm_high4of5"] = "caiso_10in10"

    @model_validator(mode="after")
    def _credentials(self) -> UtilityIn:
        if self.ven_auth == "bearer" and not (self.ven_token and self.ven_token.get_secret_value()):
            raise ValueError("ven_auth=bearer needs ven_token")
        if self.ven_auth == "oauth2" and not (
            self.oauth_client_id and self.oauth_client_secret and self.oauth_client_secret.get_secret_value()
        ):
            raise ValueError("ven_auth=oauth2 needs oauth_client_id and oauth_client_secret")
        if len(self.webhook_token.get_secret_value()) < 16:
            raise ValueError("webhook_token must be at least 16 characters")
        if self.hmac_required and not self.hmac_secret:
            raise ValueError("hmac_required needs hmac_secret")
        return self


class ProgramIn(_Strict):
    program_id: str = Field(pattern=PROGRAM_ID)
    program_name: str | None = Field(default=None, max_length=128)
    notice_s: int | None = Field(default=None, ge=0, le=7 * 86_400)
    max_duration_s: int | None = Field(default=None, gt=0, le=7 * 86_400)
    dispatch_lead_s: int | None = Field(default=None, ge=0, le=3600)
    max_events_per_day: int | None = Field(default=None, gt=0, le=100)


class EnrollmentIn(_Strict):
    program_id: str = Field(pattern=PROGRAM_ID)
    facility_ids: list[str] = Field(min_length=1, max_length=10_000)
    groups: list[str] = Field(default_factory=list, max_length=50)
    resource_name: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _groups(self) -> EnrollmentIn:
        import re

        bad = [g for g in self.groups if not re.match(GROUP, g)]
        if bad:
            raise ValueError(f"group names must match {GROUP}: {bad[:5]}")
        if self.resource_name and len(self.facility_ids) != 1:
            raise ValueError("resource_name names one facility: enroll facilities one by one to set it")
        return self


MAX_OVERLAP_S = 30 * 86_400


class RotateIn(_Strict):
    new_token: SecretStr | None = Field(default=None, description="default: a random token, shown once")
    overlap_s: int = Field(default=86_400, ge=0, le=MAX_OVERLAP_S)


class HmacRotateIn(_Strict):
    """A new webhook HMAC secret; the current one is kept (sealed) and still verifies signatures
    for ``overlap_s`` (decision 0932)."""

    new_secret: SecretStr = Field(description="the new HMAC-SHA256 signing secret; stored sealed, never returned")
    overlap_s: int = Field(default=86_400, ge=0, le=MAX_OVERLAP_S, description="how long the old secret stays valid")

    @model_validator(mode="after")
    def _strong(self) -> HmacRotateIn:
        if len(self.new_secret.get_secret_value()) < 16:
            raise ValueError("new_secret must be at least 16 characters")
        return self


class HmacSecretRotated(BaseModel):
    """The outcome of an HMAC secret rotation: no secret in it."""

    utility_id: str
    previous_valid_until: datetime | None = Field(
        description="until when a signature made with the previous secret is accepted (None: there was none)"
    )


class ProgramOut(BaseModel):
    program_id: str
    program_name: str | None
    notice_s: int | None
    max_duration_s: int | None
    dispatch_lead_s: int | None
    max_events_per_day: int | None
    enrolled_facilities: int


class UtilityOut(BaseModel):
    utility_id: str
    name: str
    vtn_base_url: str | None
    openadr_version: str
    ven_name: str
    ven_auth: str
    ven_credentials_set: bool
    webhook_tokens_active: int
    hmac_set: bool
    hmac_previous_valid_until: datetime | None = Field(
        default=None, description="a rotation's overlap: the previous HMAC secret is accepted until then"
    )
    hmac_required: bool
    active: bool
    baseline_method: str
    programs: list[ProgramOut] = Field(default_factory=list)
    updated_at: datetime | None = None


class TokenRotated(BaseModel):
    utility_id: str
    webhook_token: str | None = Field(
        description="a generated token, shown once (stored hashed); null when the caller supplied it: never echoed"
    )
    previous_valid_until: datetime | None
