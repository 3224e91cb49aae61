"""Audit the installed dependencies for known vulnerabilities (pip-audit), for CI.

    .venv/bin/python scripts/audit_deps.py            # audits the environment this Python runs in

Runs ``pip-audit --local --skip-editable`` (the project itself is not on PyPI) against the PyPI
vulnerability service and reads its JSON report:

Services are tried in turn (PyPI's JSON API, then OSV) until one answers for some package.

* any known vulnerability in an audited package: prints them and exits 1;
* the vulnerability service could not be reached, or answered for no package at all (a PyPI
  mirror that serves ``/pypi/<name>/json`` but not ``/pypi/<name>/<version>/json`` makes every
  package "not found on PyPI"): prints a WARNING saying nothing was audited and exits 0, so an
  offline CI machine does not fail for that reason alone;
* otherwise prints how many packages were audited (and which could not be) and exits 0.

``--report FILE`` reads a saved ``pip-audit -f json`` report instead of running pip-audit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NETWORK_ERRORS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "getaddrinfo",
    "Temporary failure in name resolution",
    "timed out",
    "ServiceError",
)


def run_pip_audit(service: str, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report for this interpreter's environment, or None and the reason."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        cmd = [
            sys.executable, "-m", "pip_audit", "--local", "--skip-editable", "--progress-spinner", "off",
            "--vulnerability-service", service, "--format", "json", "--output", str(out),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return None, f"pip-audit did not finish within {timeout_s:.0f} s"
        except FileNotFoundError as exc:
            return None, f"pip-audit could not start: {exc}"
        if out.is_file() and out.stat().st_size:
            return json.loads(out.read_text()), ""
        # No report: pip-audit stopped early. A network failure is a warning; anything else is not.
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
        reason = (tail[0] if tail else f"exit status {proc.returncode}")[:300]
        if proc.returncode != 0 and "No module named pip_audit" in (proc.stderr or ""):
            return None, "pip-audit is not installed (it is in the dev extra: make install)"
        if any(marker in (proc.stderr or "") for marker in NETWORK_ERRORS):
            return None, f"the vulnerability service ({service}) could not be reached: {reason}"
        raise SystemExit(f"pip-audit failed (exit {proc.returncode}): {reason}")


def summarise(report: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(findings, audited package names, skipped 'name: reason' lines) of a pip-audit JSON report."""
    findings: list[str] = []
    audited: list[str] = []
    skipped: list[str] = []
    for dep in report.get("dependencies") or []:
        name = str(dep.get("name"))
        if dep.get("skip_reason"):
            skipped.append(f"{name}: {dep['skip_reason']}")
            continue
        audited.append(name)
        for vuln in dep.get("vulns") or []:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            aliases = ", ".join(vuln.get("aliases") or [])
            findings.append(
                f"{name} {dep.get('version')}: {vuln.get('id')}" + (f" ({aliases})" if aliases else "")
                + f"; fixed in {fixes}"
            )
    return findings, audited, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--service", action="append", choices=["pypi", "osv"],
        help="vulnerability service; repeat to try several in turn (default: pypi, then osv)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up on pip-audit")
    parser.add_argument("--report", type=Path, help="read this pip-audit JSON report instead of running it")
    args = parser.parse_args(argv)

    services = args.service or ["pypi", "osv"]
    reasons: list[str] = []
    findings: list[str] = []
    audited: list[str] = []
    skipped: list[str] = []
    for service in ["report"] if args.report else services:
        if args.report:
            report: dict[str, Any] | None = json.loads(args.report.read_text())
        else:
            report, why = run_pip_audit(service, args.timeout)
            if report is None:
                reasons.append(why)
                continue
        findings, audited, skipped = summarise(report)
        if audited:
            break
        reasons.append(
            f"the vulnerability service ({service}) answered for none of the {len(skipped)} installed packages "
            "(offline, or a PyPI mirror without the per-version JSON API)"
        )
    if findings:
        print(f"pip-audit: {len(findings)} known vulnerabilities in the installed dependencies:")
        for line in findings:
            print(f"  {line}")
        return 1
    if not audited:
        print("WARNING: dependency audit inconclusive; no package was checked for known vulnerabilities:")
        for reason in reasons:
            print(f"  {reason}")
        return 0
    print(f"pip-audit: no known vulnerabilities in {len(audited)} audited packages.")
    if skipped:
        print(f"  {len(skipped)} could not be audited:")
        for line in skipped:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
