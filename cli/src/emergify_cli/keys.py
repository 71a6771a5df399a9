"""``emergify keys``: create, list, rotate and revoke the gateway's scoped API keys.

The commands change the key file (``EMERGIFY_API_KEYS_FILE``) directly; a running gateway
notices at its next request, so none of them needs a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.keystore import IssuedKey, KeyFile, KeyNotFoundError, sorted_scopes
from emergify_gateway.rate_limit import parse_rate
from emergify_gateway.routes import SCOPES, parse_scope

app = typer.Typer(help="Scoped API keys for the gateway (stored hashed; no restart needed).")
console = Console()
SCOPE_NAMES = ", ".join(scope.value for scope in SCOPES)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="the key file (default: EMERGIFY_API_KEYS_FILE)"),
]


def _key_file(path: Path | None) -> KeyFile:
    return KeyFile(path or GatewaySettings().api_keys_file)


def _show_new(issued: IssuedKey, what: str) -> None:
    record = issued.record
    console.print(
        f"{what} key [bold]{record.id}[/] ({record.name}) with scopes "
        f"{', '.join(sorted_scopes(record.scopes))}. Copy it now, it is not shown again:"
    )
    # Printed on its own, unstyled, so it can be piped: `emergify keys create ... | tail -1`.
    print(issued.key)


@app.command()
def create(
    name: Annotated[str, typer.Option(help="what the key is for")],
    scope: Annotated[list[str], typer.Option("--scope", help=f"repeat for several: {SCOPE_NAMES}")],
    file: FileOption = None,
    rate: Annotated[
        str | None,
        typer.Option(
            help="the key's own rate limit: 6000/min, 10/s, unlimited (default: "
            "the gateway's EMERGIFY_RATE_LIMIT_PER_MINUTE)"
        ),
    ] = None,
) -> None:
    """Create a key with the given scopes (and rate) and print it (once)."""
    try:
        scopes = {parse_scope(s) for s in scope}
        per_minute = parse_rate(rate) if rate is not None else None
        issued = _key_file(file).create(name, scopes, per_minute)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    _show_new(issued, "created")


@app.command("list")
def list_keys(file: FileOption = None) -> None:
    """List the keys: id, name, scopes, created, revoked or expiring (never the keys)."""
    key_file = _key_file(file)
    records = sorted(key_file.read().values(), key=lambda r: r.created_at)
    if not records:
        console.print(f"no keys in {key_file.path}; create one with `emergify keys create`")
        return
    table = Table(
        Column("id", no_wrap=True),
        "name",
        Column("scopes", no_wrap=True),
        "created",
        "revoked",
        "expires",
        title=str(key_file.path),
    )
    for r in records:
        table.add_row(
            r.id,
            r.name,
            ", ".join(sorted_scopes(r.scopes)),
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
            f"{r.revoked_at:%Y-%m-%d %H:%M:%S}" if r.revoked_at else "",
            f"{r.expires_at:%Y-%m-%d %H:%M:%S}" if r.expires_at else "",
        )
    console.print(table)


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id")],
    file: FileOption = None,
) -> None:
    """Revoke a key: it stops working at the gateway's next request."""
    try:
        record = _key_file(file).revoke(key_id)
    except KeyNotFoundError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"revoked key {record.id} ({record.name})")


@app.command()
def rotate(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id")],
    grace_seconds: Annotated[
        float, typer.Option(min=0, help="how long the old key keeps working")
    ] = 0,
    file: FileOption = None,
) -> None:
    """Replace a key with a new one of the same scopes; print the new key (once)."""
    try:
        issued = _key_file(file).rotate(key_id, grace_seconds)
    except KeyNotFoundError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    _show_new(issued, "rotated: new")
    if grace_seconds:
        console.print(f"the old key {key_id} keeps working for {grace_seconds:g} s")
    else:
        console.print(f"the old key {key_id} no longer works")
