"""Known vulnerabilities in the locked dependencies: pip-audit, then PyPI's latest-release data.

``make audit`` (and so ``make test``) runs this. Steps:

1. ``uv export`` the locked requirements (every group, workspace members left out);
2. ``pip-audit`` them against PyPI's vulnerability data;
3. for every package pip-audit could not look up (some PyPI mirrors answer only
   ``/pypi/<name>/json``, not ``/pypi/<name>/<version>/json``), read the per-name JSON: when the
   locked version *is* the latest release, that document's ``vulnerabilities`` apply to it;
   otherwise the package is reported as not auditable here.

Exits 1 when a known, not withdrawn vulnerability affects a locked version; 2 when any locked
package could not be audited (the index unreachable, or a version it has no data for) and
``deploy/audit-allowlist.toml`` does not name it with a reason; 0 only when every locked
package was audited or is allow-listed. The summary names what was audited, how, and what was
let through by the allow-list. ``EMERGIFY_AUDIT_PYPI_URL`` points the PyPI JSON look-ups at
another index (a mirror); ``EMERGIFY_AUDIT_ALLOWLIST`` at another allow-list.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPI_JSON = os.environ.get("EMERGIFY_AUDIT_PYPI_URL", "https://pypi.org/pypi/{name}/json")
ALLOWLIST = Path(
    os.environ.get("EMERGIFY_AUDIT_ALLOWLIST", ROOT / "deploy" / "audit-allowlist.toml")
)
EXIT_OK, EXIT_VULNERABLE, EXIT_NOT_AUDITED = 0, 1, 2
FETCH_TIMEOUT_SECONDS = 10.0
# A package the index did not answer for is asked again after these pauses (seconds): one
# dropped request must not fail a build, an index that stays away still does.
FETCH_RETRY_PAUSES = (2.0, 8.0)
PIP_AUDIT_TIMEOUT_SECONDS = 45.0


@dataclass
class Report:
    """What the audit found, package by package."""

    audited_by_pip_audit: list[str] = field(default_factory=list)
    checked_latest: list[str] = field(default_factory=list)
    not_auditable: dict[str, str] = field(default_factory=dict)  # name -> why
    unreachable: list[str] = field(default_factory=list)
    vulnerable: list[str] = field(default_factory=list)  # "name==version: ID (fixed in ...)"
    problems: list[str] = field(default_factory=list)  # the audit itself could not run


def uv() -> list[str]:
    """The uv command (``python -m uv`` when uv is not on the PATH, as the Makefile does)."""
    return [found] if (found := shutil.which("uv")) else [sys.executable, "-m", "uv"]


def export_requirements(path: Path) -> dict[str, str]:
    """Write the locked requirements to ``path``; the pinned version of each, by name."""
    text = subprocess.run(
        [*uv(), "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-groups"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path.write_text(text)
    pins = {}
    for line in text.splitlines():
        requirement = line.split(";", 1)[0].strip()
        if "==" in requirement and not requirement.startswith("#"):
            name, version = requirement.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    out, last_dash = [], False
    for ch in name.strip().lower():
        dash = ch in "-_."
        if not (dash and last_dash):
            out.append("-" if dash else ch)
        last_dash = dash
    return "".join(out)


def run_pip_audit(requirements: Path, report: Report) -> set[str]:
    """Run pip-audit; record what it audited and found. The names it could not audit."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            *uv(), "run", "--frozen", "pip-audit", "-r", str(requirements), "--no-deps",
            "--disable-pip", "--progress-spinner", "off", "-f", "json", "-o", out.name,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=PIP_AUDIT_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            report.problems.append(f"pip-audit did not finish in {PIP_AUDIT_TIMEOUT_SECONDS:g} s")
            return set()
        try:
            result = json.loads(Path(out.name).read_text() or "null")
        except ValueError:
            result = None
    if not isinstance(result, dict):
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        report.problems.append(f"pip-audit could not run (exit {done.returncode}): {last[0]}")
        return set()
    skipped = set()
    for dep in result.get("dependencies", []):
        name, version = canonical(dep["name"]), dep.get("version")
        if "skip_reason" in dep:
            skipped.add(name)
            continue
        report.audited_by_pip_audit.append(name)
        for vuln in dep.get("vulns", []):
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            report.vulnerable.append(f"{name}=={version}: {vuln['id']} (fixed in {fixed})")
    return skipped


def _ssl_context() -> ssl.SSLContext:
    # Use the CA bundle pip is told to use, if any (mirrors behind a TLS-inspecting proxy).
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile if cafile and Path(cafile).exists() else None)


def fetch_latest(name: str, context: ssl.SSLContext, url: str = PYPI_JSON) -> dict | None:
    """PyPI's JSON for ``name`` (its latest release), or None if it could not be fetched."""
    request = urllib.request.Request(url.format(name=name), headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS, context=context) as r:
            return json.load(r)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError):
        return None


def check_latest(
    names: set[str], pins: dict[str, str], report: Report, url: str = PYPI_JSON
) -> None:
    """For each name: if the locked version is the latest release, apply its vulnerabilities."""
    context = _ssl_context()
    ordered = sorted(names)
    docs: dict[str, dict | None] = dict.fromkeys(ordered)
    pending = ordered
    for pause in (0.0, *FETCH_RETRY_PAUSES):
        if not pending:
            break
        time.sleep(pause)
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda n: fetch_latest(n, context, url), pending))
        docs.update(zip(pending, answers, strict=True))
        pending = [name for name, doc in zip(pending, answers, strict=True) if doc is None]
    for name, doc in docs.items():
        pinned = pins.get(name)
        if doc is None:
            report.unreachable.append(name)
            report.not_auditable[name] = f"{name}=={pinned}: the index did not answer"
            continue
        latest = doc.get("info", {}).get("version")
        if pinned is None or latest != pinned:
            report.not_auditable[name] = (
                f"{name}=={pinned}: no data for this version (the index's latest is {latest})"
            )
            continue
        report.checked_latest.append(name)
        for vuln in doc.get("vulnerabilities") or []:
            if vuln.get("withdrawn"):
                continue
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no fix yet"
            report.vulnerable.append(f"{name}=={pinned}: {vuln.get('id')} (fixed in {fixed})")


def load_allowlist(path: Path) -> dict[str, str]:
    """Package name -> the documented reason it may pass unaudited. Raises ValueError for an
    entry without a reason: an allow-list entry nobody can justify is not one."""
    if not path.exists():
        return {}
    packages = tomllib.loads(path.read_text(encoding="utf-8")).get("packages", {})
    allowed = {}
    for name, entry in packages.items():
        reason = str((entry or {}).get("reason", "")).strip()
        if not reason:
            raise ValueError(f"{path}: the entry for {name} gives no reason")
        allowed[canonical(name)] = reason
    return allowed


def verdict(report: Report, pins: dict[str, str], allowlist: dict[str, str]) -> tuple[int, str]:
    """The exit code and the summary: what was audited and how, what the allow-list let
    through, what could not be audited, what is vulnerable."""
    checked = len(report.audited_by_pip_audit) + len(report.checked_latest)
    allowed = {n: why for n, why in report.not_auditable.items() if n in allowlist}
    missing = {n: why for n, why in report.not_auditable.items() if n not in allowlist}
    lines = [
        f"audit of {len(pins)} locked packages:",
        f"  {len(report.audited_by_pip_audit)} audited by pip-audit",
        f"  {len(report.checked_latest)} audited via the index's latest-release vulnerability "
        "data (the locked version is the latest)",
        f"  {len(allowed)} NOT audited, allow-listed in {ALLOWLIST.name}:",
        *(f"      {allowed[n]} -- allowed: {allowlist[n]}" for n in sorted(allowed)),
        f"  {len(missing)} NOT audited and not allow-listed:",
        *(f"      {missing[n]}" for n in sorted(missing)),
        *(f"  NOTE: {problem}" for problem in report.problems),
    ]
    if report.unreachable:
        lines.append(
            f"  the index ({PYPI_JSON.format(name='<name>')}) did not answer for "
            f"{len(report.unreachable)} packages"
        )
    if report.vulnerable:
        lines.append(f"FAIL: {len(report.vulnerable)} known vulnerabilities:")
        lines += [f"  {line}" for line in report.vulnerable]
        return EXIT_VULNERABLE, "\n".join(lines)
    if missing or checked == 0:
        lines.append(
            f"FAIL: {len(missing)} locked packages could not be audited. An audit that could "
            "not look is not a pass: make the index reachable (EMERGIFY_AUDIT_PYPI_URL names "
            f"it), or name each package with a reason in {ALLOWLIST}."
        )
        return EXIT_NOT_AUDITED, "\n".join(lines)
    lines.append(
        f"ok: no known vulnerability in the {checked} audited packages; "
        f"{len(allowed)} allow-listed unaudited"
    )
    return EXIT_OK, "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    try:
        allowlist = load_allowlist(ALLOWLIST)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"FAIL: the allow-list is not usable: {exc}")
        return EXIT_NOT_AUDITED
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        pins = export_requirements(requirements)
        skipped = run_pip_audit(requirements, report)
    # What pip-audit skipped, left out of its answer, or (when it could not run) everything.
    skipped |= set(pins) - set(report.audited_by_pip_audit)
    if skipped:
        check_latest(skipped, pins, report)
    code, summary = verdict(report, pins, allowlist)
    print(summary)
    print(f"({time.monotonic() - started:.1f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
