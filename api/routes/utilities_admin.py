"""Utility onboarding for platform administrators (``platform_admin`` role): a utility's VTN,
OpenADR version, VEN credentials, webhook credentials, programs and enrollments. Same functions
as ``energy utility``; secrets are accepted, never returned; every change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from api import examples as ex
from api.auth import Principal, require_role
from api.errors import COMMON_RESPONSES, ApiError, error_responses
from api.examples import ok, request_body
from dr_coordinator.adapters import onboarding
from dr_coordinator.adapters.ven_credentials import credentials_box
from schemas.utilities import (
    EnrollmentIn,
    HmacRotateIn,
    HmacSecretRotated,
    ProgramIn,
    RotateIn,
    TokenRotated,
    UtilityIn,
    UtilityOut,
)

router = APIRouter(prefix="/api/admin/utilities", tags=["utility onboarding"], responses=COMMON_RESPONSES)
Admin = Annotated[Principal, Depends(require_role("platform_admin"))]
UtilityId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", openapi_examples={"simulated": {"value": "util-sim"}})
]


def _actor(p: Principal) -> str:
    return f"{p.kind}:{p.principal_id}"


async def _call(request: Request, fn: Any, *args: Any) -> Any:
    async with request.app.state.pool.acquire() as conn:
        try:
            return await fn(conn, *args)
        except onboarding.OnboardingError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None


@router.get(
    "", response_model=list[UtilityOut], summary="Utilities onboarded, with programs", responses=ok([ex.UTILITY_OUT])
)
async def list_utilities(request: Request, admin: Admin) -> Any:
    return await _call(request, onboarding.list_utilities)


@router.post(
    "",
    response_model=UtilityOut,
    status_code=201,
    summary="Onboard a utility: VTN, OpenADR version, VEN and webhook credentials",
    responses={**error_responses({409: "A utility with this id exists"}), **ok(ex.UTILITY_OUT, 201)},
    openapi_extra=request_body(ex.UTILITY_IN),
)
async def add_utility(request: Request, body: UtilityIn, admin: Admin) -> Any:
    box = credentials_box(request.app.state.settings.dr)  # the VEN credentials are stored encrypted
    async with request.app.state.pool.acquire() as conn:
        try:
            return await onboarding.add_utility(conn, body, _actor(admin), box=box)
        except onboarding.OnboardingError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None


@router.get("/{utility_id}", response_model=UtilityOut, summary="One utility", responses=ok(ex.UTILITY_OUT))
async def show_utility(request: Request, utility_id: UtilityId, admin: Admin) -> Any:
    return await _call(request, onboarding.show_utility, utility_id)


@router.put(
    "/{utility_id}/programs",
    response_model=UtilityOut,
    summary="Create or change one of the utility's programs",
    responses=ok(ex.UTILITY_OUT),
    openapi_extra=request_body(ex.PROGRAM_IN),
)
async def set_program(request: Request, utility_id: UtilityId, body: ProgramIn, admin: Admin) -> Any:
    return await _call(request, onboarding.add_program, utility_id, body, _actor(admin))


@router.post(
    "/{utility_id}/enrollments",
    response_model=UtilityOut,
    summary="Enroll facilities in a program",
    responses=ok(ex.UTILITY_OUT),
    openapi_extra=request_body(ex.ENROLLMENT_IN),
)
async def enroll(request: Request, utility_id: UtilityId, body: EnrollmentIn, admin: Admin) -> Any:
    return await _call(request, onboarding.enroll, utility_id, body, _actor(admin))


@router.post(
    "/{utility_id}/webhook-token",
    response_model=TokenRotated,
    summary="Rotate the utility's webhook token (the new one is shown once; the old one overlaps)",
    responses=ok(ex.TOKEN_ROTATED),
    openapi_extra=request_body(ex.ROTATE_IN),
)
async def rotate_token(request: Request, utility_id: UtilityId, body: RotateIn, admin: Admin) -> Any:
    return await _call(request, onboarding.rotate_webhook_token, utility_id, body, _actor(admin))


@router.post(
    "/{utility_id}/hmac-secret",
    response_model=HmacSecretRotated,
    summary="Rotate the utility's webhook HMAC secret (the old one verifies until the overlap ends)",
    responses={
        **error_responses({409: "The previous secret of a rotation is still accepted (one overlap at a time)"}),
        **ok(ex.HMAC_ROTATED),
    },
    openapi_extra=request_body(ex.HMAC_ROTATE_IN),
)
async def rotate_hmac_secret(request: Request, utility_id: UtilityId, body: HmacRotateIn, admin: Admin) -> Any:
    box = credentials_box(request.app.state.settings.dr)  # sealed at rest, like the one it replaces
    return await _call(request, onboarding.rotate_hmac_secret, utility_id, body, _actor(admin), box)


@router.delete("/{utility_id}", status_code=204, summary="Deactivate a utility (its history stays)")
async def remove_utility(request: Request, utility_id: UtilityId, admin: Admin) -> None:
    await _call(request, onboarding.remove_utility, utility_id, _actor(admin))
