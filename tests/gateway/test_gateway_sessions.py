"""Session cookies at the gateway: malformed values, sign-out, and rotating the secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emergify_contracts import session
from emergify_contracts.session import SESSION_COOKIE, SessionSettings

SECRET = "gateway-test-session-secret-0123456789abcdef"
OLD_SECRET = "gateway-test-old-session-secret-0123456789ab"


def _cookie(listener: str = "demo", secret: str = SECRET) -> str:
    return session.sign(listener, secret, 3600)


@pytest.mark.parametrize(
    "value",
    [
        "ZGVtbw.²³⁴.c2ln",  # digits by str.isdigit(), not by int()
        "ZGVtbw.٣٣٣٣٣٣٣٣٣٣.c2ln",  # Arabic-Indic digits
        "ZGVtbw." + "9" * 5000 + ".c2ln",  # more digits than int() parses
        "ZGVtbw.1.%%%",
        "garbage",
        "a.b.c.d",
        "\u00e9\u00e9.1.x",
    ],
    ids=["superscripts", "arabic-indic", "5000-digits", "bad-b64", "garbage", "4-parts", "latin1"],
)
def test_malformed_session_cookie_is_401_without_a_traceback(
    make_gateway: Callable[..., TestClient], capsys: pytest.CaptureFixture[str], value: str
) -> None:
    gateway = make_gateway(session_secret=SECRET)
    # Raw bytes, as a hostile client sends them (httpx would refuse to encode them itself).
    response = gateway.get(
        "/api/v1/model", headers={"Cookie": f"{SESSION_COOKIE}={value}".encode()}
    )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_verify_never_raises_on_hostile_values() -> None:
    for value in ("x.²³.y", "x." + "1" * 10_000 + ".y", ".", "..", "a.-1.b", "a.+1.b", "a. 1.b"):
        assert session.verify(value, SECRET) is None


def test_sign_out_is_a_post_that_revokes_the_cookie_at_the_gateway(
    make_gateway: Callable[..., TestClient], tmp_path: Path
) -> None:
    gateway = make_gateway(
        session_secret=SECRET, revoked_sessions_file=tmp_path / "revoked-sessions.json"
    )
    cookie = _cookie()
    gateway.cookies.set(SESSION_COOKIE, cookie)
    assert gateway.get("/api/v1/model").status_code == 200
    # A GET is not a sign-out: the cookie still works afterwards.
    gateway.get("/api/v1/spotify/logout")
    assert gateway.get("/api/v1/model").status_code == 200
    gateway.post("/api/v1/spotify/logout")
    gateway.cookies.set(SESSION_COOKIE, cookie)  # replayed by whoever kept a copy
    assert gateway.get("/api/v1/model").status_code == 401
    # Another gateway process sharing the revocation file refuses it too.
    other = make_gateway(
        session_secret=SECRET, revoked_sessions_file=tmp_path / "revoked-sessions.json"
    )
    other.cookies.set(SESSION_COOKIE, cookie)
    assert other.get("/api/v1/model").status_code == 401
    other.cookies.set(SESSION_COOKIE, _cookie("someone-else"))
    assert other.get("/api/v1/model").status_code == 200


def test_session_secret_rotation_accepts_previous_secrets_and_signs_with_the_first(
    make_gateway: Callable[..., TestClient],
) -> None:
    settings = SessionSettings(
        _env_file=None,  # type: ignore[call-arg]
        session_secret=SECRET,
        session_previous_secrets=OLD_SECRET,
    )
    assert settings.session_secrets() == [SECRET, OLD_SECRET]
    assert session.verify(_cookie(secret=OLD_SECRET), settings.session_secrets()) == "demo"
    assert session.verify(_cookie(secret="x" * 40), settings.session_secrets()) is None

    rotated = make_gateway(session_secret=SECRET, session_previous_secrets=OLD_SECRET)
    rotated.cookies.set(SESSION_COOKIE, _cookie(secret=OLD_SECRET))
    assert rotated.get("/api/v1/model").status_code == 200
    retired = make_gateway(session_secret=SECRET)
    retired.cookies.set(SESSION_COOKIE, _cookie(secret=OLD_SECRET))
    assert retired.get("/api/v1/model").status_code == 401
    with pytest.raises(ValueError, match="at least"):
        SessionSettings(
            _env_file=None,  # type: ignore[call-arg]
            session_secret=SECRET,
            session_previous_secrets=f"{OLD_SECRET},short",
        )
