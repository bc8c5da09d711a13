"""The backup passphrase: from the environment variable or a key file, never the command line;
required or refused as the archive needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.operations.backup.contents import PASSPHRASE_ENV


# ----------------------------------------------------------------------------- passphrase
def read_passphrase(passphrase_file: str | None, required: bool) -> bytes | None:
    """The passphrase from --passphrase-file or POSTHOG_BACKUP_PASSPHRASE; never from a command-line value."""
    from posthog_compose.operations.archive import MIN_PASSPHRASE

    if passphrase_file:
        path = Path(passphrase_file).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise OperatorError(f"--passphrase-file {path}: cannot read it ({exc.strerror}); give a readable file "
                                "holding the passphrase")
        if path.stat().st_mode & 0o077:
            raise OperatorError(f"--passphrase-file {path} is readable by other users; run `chmod 600 {path}`")
        value, source = raw.rstrip(b"\r\n"), f"--passphrase-file {path}"
        # Known to the masking layer before anything can print it (a message that quotes a line of the file).
        from posthog_compose import masking

        masking.register(value.decode("utf-8", errors="replace"))
    elif os.environ.get(PASSPHRASE_ENV):
        value, source = os.environ[PASSPHRASE_ENV].encode(), PASSPHRASE_ENV
    else:
        if required:
            raise OperatorError(f"no passphrase: set {PASSPHRASE_ENV} in the environment or pass --passphrase-file "
                                "FILE (a 0600 file)")
        return None
    if len(value) < MIN_PASSPHRASE:
        raise OperatorError(f"{source}: the passphrase has {len(value)} characters; use at least {MIN_PASSPHRASE}")
    return value
