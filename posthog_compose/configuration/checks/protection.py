"""Drift from the kit's templates, certificates near their expiry, and .env's protection
(mode 0600, not tracked by git).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.findings import ENV, _Report


# ----------------------------------------------------------------------------- drift and .env protection
def _check_drift(root: Path, manifest, report: _Report) -> None:
    from posthog_compose.documents import generate

    try:
        stale = generate.drift(root, manifest)
    except OperatorError as exc:
        report.warning("drift", "README.md", None, "", str(exc).split(": ", 1)[-1], "")
        return
    for path in stale:
        report.warning("drift", path.name, None, "", "differs from what variables.yml generates",
                       "run `invoke generate` (never edit generated files by hand)")


def _check_certificate_expiry(root: Path, report: _Report) -> None:
    """A warning for each certificate under certs/ that expires within certs.RENEW_DAYS (or has expired):
    TLS connections inside the deployment fail on that day."""
    import datetime as dt

    from posthog_compose.configuration import certs

    found = sorted(certs.cert_dir(root).glob("*.crt")) if certs.cert_dir(root).is_dir() else []
    if not found:
        return  # no TLS yet: nothing to load (and config-check stays instant)
    from cryptography import x509

    now = dt.datetime.now(dt.timezone.utc)
    for path in found:
        relative = path.relative_to(root).as_posix()
        try:
            expires = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
        except (ValueError, OSError) as exc:
            report.warning("certificate", relative, None, "", f"cannot be read as a PEM certificate ({exc})",
                           "invoke harden --only certificates")
            continue
        days = (expires - now).days
        if days < certs.RENEW_DAYS:
            when = f"expired on {expires:%Y-%m-%d}" if expires <= now else f"expires in {days} day(s) ({expires:%Y-%m-%d})"
            report.warning("certificate-expiry", relative, None, "", f"{when}: TLS inside the deployment fails then",
                           "renew it with `invoke harden --only certificates` (running services are recreated)")


def _check_env_protection(root: Path, report: _Report) -> None:
    path = root / ENV
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        report.error("env-permissions", ENV, None, "", f"is readable by other users (mode {mode:o}); it holds secrets",
                     f"chmod 600 {ENV}")
    if (root / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ENV], cwd=root,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if tracked.returncode == 0:
            report.error("env-tracked", ENV, None, "", "is tracked by git; its secrets are in the history",
                         f"git rm --cached {ENV}, then rotate every secret (`invoke init --force` on a fresh install)")
