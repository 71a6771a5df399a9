"""deploy/audit.py: a run that could not audit a package is not green.

The index is PyPI, which the tests cannot control: a stand-in index (PyPI's JSON API shape,
``/pypi/<name>/json``) served on loopback, and a closed port for an unreachable one."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from emergify_cli.broker import free_port

REPO = Path(__file__).resolve().parents[2]
AUDIT = REPO / "deploy" / "audit.py"


def _load_audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("emergify_audit", AUDIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


audit = _load_audit()

# name -> (latest version on the index, its vulnerabilities)
INDEX = {
    "fresh": ("1.0", []),
    "leaky": ("2.0", [{"id": "PYSEC-0000-1", "fixed_in": ["2.1"], "withdrawn": None}]),
    "behind": ("9.0", []),
    "flaky": ("3.0", []),  # the first request for it gets a 503, as a dropped one would
}


@pytest.fixture(scope="module")
def index_url() -> Iterator[str]:
    asked: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.strip("/").split("/")[1]
            if name == "flaky" and name not in asked:
                asked.add(name)
                self.send_error(503)
                return
            if name not in INDEX:
                self.send_error(404)
                return
            version, vulns = INDEX[name]
            body = json.dumps({"info": {"version": version}, "vulnerabilities": vulns}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/pypi/{{name}}/json"
    server.shutdown()


def _run(pins: dict[str, str], url: str, allowlist: dict[str, str]) -> tuple[int, str]:
    report = audit.Report()
    audit.check_latest(set(pins), pins, report, url=url)
    return audit.verdict(report, pins, allowlist)


def test_every_package_audited_and_clean_is_green(index_url: str) -> None:
    code, summary = _run({"fresh": "1.0"}, index_url, {})
    assert code == audit.EXIT_OK, summary
    assert "1 audited via the index's latest-release vulnerability data" in summary


def test_a_known_vulnerability_fails(index_url: str) -> None:
    code, summary = _run({"fresh": "1.0", "leaky": "2.0"}, index_url, {})
    assert code == audit.EXIT_VULNERABLE
    assert "leaky==2.0: PYSEC-0000-1 (fixed in 2.1)" in summary


def test_a_version_the_index_has_no_data_for_fails_unless_allow_listed(index_url: str) -> None:
    pins = {"fresh": "1.0", "behind": "8.0"}
    code, summary = _run(pins, index_url, {})
    assert code == audit.EXIT_NOT_AUDITED
    assert "behind==8.0: no data for this version (the index's latest is 9.0)" in summary
    assert "1 NOT audited and not allow-listed" in summary
    code, summary = _run(pins, index_url, {"behind": "held back on purpose"})
    assert code == audit.EXIT_OK, summary
    assert "allowed: held back on purpose" in summary
    assert "1 NOT audited, allow-listed" in summary


def test_a_dropped_request_is_asked_again(index_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "FETCH_RETRY_PAUSES", (0.1,))
    code, summary = _run({"fresh": "1.0", "flaky": "3.0"}, index_url, {})
    assert code == audit.EXIT_OK, summary
    assert "2 audited via the index's latest-release vulnerability data" in summary


def test_an_unreachable_index_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "FETCH_RETRY_PAUSES", (0.1,))
    closed = f"http://127.0.0.1:{free_port()}/pypi/{{name}}/json"
    code, summary = _run({"fresh": "1.0", "behind": "8.0"}, closed, {})
    assert code == audit.EXIT_NOT_AUDITED
    assert "fresh==1.0: the index did not answer" in summary
    assert "FAIL: 2 locked packages could not be audited" in summary


def test_make_audit_fails_when_the_index_cannot_be_reached() -> None:
    env = {
        **os.environ,
        "EMERGIFY_AUDIT_PYPI_URL": f"http://127.0.0.1:{free_port()}/pypi/{{name}}/json",
    }
    done = subprocess.run(
        [sys.executable, str(AUDIT)], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == audit.EXIT_NOT_AUDITED, done.stdout + done.stderr
    assert "could not be audited" in done.stdout
    assert "the index did not answer" in done.stdout


def test_the_allow_list_gives_a_reason_for_every_entry_and_names_locked_packages(
    tmp_path: Path,
) -> None:
    allowed = audit.load_allowlist(REPO / "deploy" / "audit-allowlist.toml")
    lock = (REPO / "uv.lock").read_text()
    locked = {
        audit.canonical(line.split('"')[1])
        for line in lock.splitlines()
        if line.startswith("name = ")
    }
    assert allowed and set(allowed) <= locked, set(allowed) - locked
    assert all(len(reason) > 40 for reason in allowed.values())
    bad = tmp_path / "allow.toml"
    bad.write_text('[packages.numpy]\nreason = ""\n')
    with pytest.raises(ValueError, match="numpy gives no reason"):
        audit.load_allowlist(bad)
