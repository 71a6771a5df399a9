"""The consent page Spotify shows at ``/authorize``, and its form's answer."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emergify_spotify.sandbox.deps import State
from emergify_spotify.sandbox.listeners import Listener
from emergify_spotify.sandbox.oauth import check_authorize, grant_code, redirect_back

router = APIRouter(tags=["accounts"])


def consent_page(params: dict[str, str], users: list[Listener], chosen: str) -> str:
    """The sign-in page: pick a demo listener, then Agree or Cancel."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
    )
    options = "".join(
        f'<option value="{u.id}"{" selected" if u.id == chosen else ""}>'
        f"{html.escape(u.display_name)} ({u.id})</option>"
        for u in users
    )
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in params.get("scope", "").split())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Spotify sandbox – sign in</title>
<style>body{{font-family:sans-serif;background:#121212;color:#fff;max-width:30rem;margin:3rem auto}}
button{{background:#1db954;border:0;border-radius:2rem;padding:.8rem 2rem;margin:.3rem}}
#cancel{{background:#535353;color:#fff}}</style></head>
<body><h1>Spotify sandbox</h1>
<p>An offline stand-in for Spotify. <b>{html.escape(params.get("client_id", ""))}</b> asks to:</p>
<ul>{scopes}</ul>
<form method="post" action="/authorize">{hidden}
<label for="user">Sign in as</label> <select id="user" name="user">{options}</select><br><br>
<button id="agree" name="decision" value="agree" type="submit">Agree</button>
<button id="cancel" name="decision" value="cancel" type="submit">Cancel</button>
</form></body></html>"""


@router.post("/authorize", response_model=None)
async def consent(request: Request, state: State) -> Response:
    """The consent form: Agree issues a code, Cancel answers ``error=access_denied``."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    decision, user = form.pop("decision", "cancel"), form.pop("user", "demo")
    refusal = check_authorize(state, form)
    if refusal is not None:
        return refusal
    if decision != "agree":
        return redirect_back(form, error="access_denied")
    return grant_code(state, form, user if user in state.listeners else "demo")
