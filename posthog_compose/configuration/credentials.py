"""Secret values: how each kind is generated, in the alphabets PostHog and the services accept.

- encryption keys: exactly 32 characters of [A-Za-z0-9_-], what PostHog's Django side and
  plugin server both accept (`secrets.token_urlsafe(24)`);
- SECRET_KEY: 64 characters of [A-Za-z0-9_-];
- passwords: 32 letters and digits, safe unencoded in URLs and in ClickHouse XML.
"""

from __future__ import annotations

import secrets
import string

PASSWORD_ALPHABET = string.ascii_letters + string.digits


def encryption_key() -> str:
    return secrets.token_urlsafe(24)


def secret_key() -> str:
    return secrets.token_urlsafe(48)


def password(length: int = 32) -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


GENERATORS = {
    "encryption-key": encryption_key,
    "secret-key": secret_key,
    "password": password,
}


def generate(method: str) -> str:
    """A fresh secret, registered with the masking layer before anyone can print it."""
    from posthog_compose import masking

    value = GENERATORS[method]()
    masking.register(value)
    return value

