"""Bearer tokens (decision 0009): key id, rotation window, issuer per environment, audience, lifetime."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from api.auth import SigningKey, TokenKeys, decode_token, issue_token
from api.config import ApiSettings
from api.errors import ApiError

NOW = datetime.now(UTC).replace(microsecond=0)  # PyJWT checks exp and iat against the real clock
OLD = SigningKey("k-2026-11", "o" * 40)
NEW = SigningKey("k-2026-12", "n" * 40)
ISSUER = "energy-platform/production"


def _code(token: str, keys: TokenKeys, now: datetime = NOW) -> str:
    try:
        decode_token(token, keys, now)
    except ApiError as exc:
        assert exc.status == 401
        return exc.code
    return "ok"


def _token(keys: TokenKeys, ttl_s: float = 900, now: datetime = NOW) -> str:
    return issue_token(uuid.uuid4(), "tenant-a", "analyst", keys, ttl_s, now)[0]


def test_a_token_names_its_key_issuer_and_audience_and_lives_its_ttl() -> None:
    token = _token(TokenKeys(NEW, ISSUER), ttl_s=900)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k-2026-12", "typ": "JWT"}
    claims = jwt.decode(token, "n" * 40, algorithms=["HS256"], audience="energy-api", options={"verify_exp": False})
    assert claims["iss"] == ISSUER and claims["aud"] == "energy-api"
    assert claims["iat"] == int(NOW.timestamp()) and claims["exp"] == int(NOW.timestamp()) + 900


def test_during_a_rotation_window_tokens_of_both_keys_verify_and_after_it_only_the_new_ones() -> None:
    before = TokenKeys(OLD, ISSUER)
    during = TokenKeys(NEW, ISSUER, previous=OLD, previous_until=NOW + timedelta(minutes=15))
    old_token, new_token = _token(before), _token(during)
    assert _code(old_token, during) == "ok" and _code(new_token, during) == "ok"
    # Once the window has ended, the previous key verifies nothing, even while still configured.
    ended = TokenKeys(NEW, ISSUER, previous=OLD, previous_until=NOW - timedelta(seconds=1))
    assert _code(old_token, ended) == "invalid_token"
    assert _code(new_token, ended) == "ok"
    # And once it is removed from the settings.
    assert _code(old_token, TokenKeys(NEW, ISSUER)) == "invalid_token"


def test_unknown_or_missing_key_id_is_refused() -> None:
    keys = TokenKeys(NEW, ISSUER)
    claims = {"sub": str(uuid.uuid4()), "aud": "energy-api", "iss": ISSUER, "iat": 1, "exp": 2**40}
    no_kid = jwt.encode(claims, NEW.secret, algorithm="HS256")
    other_kid = jwt.encode(claims, NEW.secret, algorithm="HS256", headers={"kid": "k-1999"})
    right_kid = jwt.encode(claims, NEW.secret, algorithm="HS256", headers={"kid": NEW.key_id})
    assert _code(no_kid, keys) == _code(other_kid, keys) == "invalid_token"
    assert _code(right_kid, keys) == "ok"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with our 40-byte key
def test_issuer_audience_and_algorithm_are_checked() -> None:
    keys = TokenKeys(NEW, ISSUER)
    staging = _token(TokenKeys(NEW, "energy-platform/staging"))  # same key, another environment
    assert _code(staging, keys) == "invalid_token"
    base = {"sub": str(uuid.uuid4()), "iss": ISSUER, "iat": 1, "exp": 2**40}
    wrong_aud = jwt.encode({**base, "aud": "grafana"}, NEW.secret, algorithm="HS256", headers={"kid": NEW.key_id})
    no_aud = jwt.encode(base, NEW.secret, algorithm="HS256", headers={"kid": NEW.key_id})
    hs512 = jwt.encode({**base, "aud": "energy-api"}, NEW.secret, algorithm="HS512", headers={"kid": NEW.key_id})
    unsigned = jwt.encode({**base, "aud": "energy-api"}, None, algorithm="none", headers={"kid": NEW.key_id})
    for token in (wrong_aud, no_aud, hs512, unsigned, "not.a.jwt", ""):
        assert _code(token, keys) == "invalid_token", token


def test_an_expired_token_is_refused_as_expired() -> None:
    keys = TokenKeys(NEW, ISSUER)
    assert _code(_token(keys, ttl_s=60, now=NOW - timedelta(minutes=2)), keys) == "token_expired"


def test_token_keys_come_from_the_settings() -> None:
    api = ApiSettings(
        token_secret=SecretStr(NEW.secret),
        token_key_id=NEW.key_id,
        token_previous_secret=SecretStr(OLD.secret),
        token_previous_key_id=OLD.key_id,
        token_previous_until=NOW,
    )
    from energy.settings import Settings

    keys = TokenKeys.from_settings(Settings(environment="test", api=api))
    assert keys == TokenKeys(NEW, "energy-platform/test", previous=OLD, previous_until=NOW)


@pytest.mark.parametrize(
    "fields",
    [
        {"token_previous_secret": SecretStr("o" * 40)},
        {"token_previous_secret": SecretStr("o" * 40), "token_previous_key_id": "k-old"},
        {"token_previous_key_id": "k-old", "token_previous_until": NOW},
        {"token_previous_secret": SecretStr("o" * 40), "token_previous_key_id": "dev", "token_previous_until": NOW},
    ],
)
def test_a_rotation_window_needs_a_secret_a_distinct_key_id_and_an_end(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="token_previous"):
        ApiSettings(**fields)  # type: ignore[arg-type]
