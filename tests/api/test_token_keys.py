"""Bearer tokens (decision 0009): key id, rotation window, issuer per environment, audience, lifetime."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from api.auth import SigningKey, TokenKeys, VerifiedTokens, decode_token, issue_token
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


def test_the_verified_token_memo_honours_expiry_exactly() -> None:
    memo = VerifiedTokens(max_entries=2)
    keys = TokenKeys(NEW, ISSUER)
    memo.put("t1", {"sub": "a"}, 1_000.0, keys)
    assert memo.get("t1", 999.0, keys) == {"sub": "a"}
    assert memo.get("t1", 1_000.0, keys) is None  # exp is exclusive, as PyJWT has it
    assert len(memo) == 0  # and the expired entry is gone
    for n in range(3):  # bounded: the least recently stored goes first
        memo.put(f"t{n}", {"sub": str(n)}, 2_000.0, keys)
    assert [memo.get(f"t{n}", 0.0, keys) for n in range(3)] == [None, {"sub": "1"}, {"sub": "2"}]


def test_a_memoised_token_matches_only_itself_and_only_under_the_keys_that_verified_it() -> None:
    during = TokenKeys(NEW, ISSUER, previous=OLD, previous_until=NOW + timedelta(minutes=5))
    memo = VerifiedTokens()
    token = _token(during, ttl_s=900)
    claims = decode_token(token, during, NOW, memo)
    assert memo.get(token, NOW.timestamp(), during) == claims
    # The same claims with a forged signature do not match the memoised token.
    head, body, _ = token.split(".")
    assert _code(f"{head}.{body}.{'A' * 43}", during) == "invalid_token"
    with pytest.raises(ApiError):
        decode_token(f"{head}.{body}.{'A' * 43}", during, NOW, memo)
    # Other keys (the new key removed, say) empty the memo: the token is verified again, and refused.
    assert _code(token, TokenKeys(OLD, ISSUER)) == "invalid_token"
    with pytest.raises(ApiError):
        decode_token(token, TokenKeys(OLD, ISSUER), NOW, memo)
    assert len(memo) == 0


def test_a_token_of_the_previous_key_is_memoised_no_longer_than_the_rotation_window() -> None:
    window_end = NOW + timedelta(minutes=5)
    during = TokenKeys(NEW, ISSUER, previous=OLD, previous_until=window_end)
    old_token = _token(TokenKeys(OLD, ISSUER), ttl_s=900)  # expires 15 min after NOW, after the window
    new_token = _token(during, ttl_s=900)
    memo = VerifiedTokens()
    decode_token(old_token, during, NOW, memo)
    decode_token(new_token, during, NOW, memo)
    just_after_window = window_end.timestamp() + 1
    assert memo.get(old_token, just_after_window, during) is None
    assert memo.get(new_token, just_after_window, during) is not None  # its own exp is 10 minutes later
