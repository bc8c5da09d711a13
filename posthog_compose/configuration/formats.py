"""Value formats of the manifest: what each accepts, how it is described, and the hint
given when a value does not fit. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import SplitResult, urlsplit as _urlsplit

from posthog_compose.configuration.validators import (  # noqa: F401 - one validator per kind of value
    HOSTNAME_RE,
    is_ascii_number,
    hostname_problem,
    host_port_entry,
    number_problem,
    port_number,
    port_problem,
    postgres_url_problem,
    redis_url_problem,
    whole_number,
)

_INVALID_URL = SplitResult("", "", "", "", "")


def urlsplit(value: str) -> SplitResult:
    """urllib's urlsplit that never raises: a URL it cannot split (an unencoded [ or ] in a
    password) gives empty parts, which every check then reports without printing the URL."""
    try:
        return _urlsplit(value)
    except ValueError:
        return _INVALID_URL

ENCRYPTION_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
URL_SAFE_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
MEMORY_RE = re.compile(r"^[0-9]{1,18}(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)
LOG_LEVELS = ("none", "fatal", "critical", "error", "warning", "notice", "information", "debug", "trace", "test")
# An image reference as Docker parses it: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    check: Callable[[str], "str | None"]  # returns a problem (with its hint) or None


def _identifier(value: str) -> str | None:
    if not IDENTIFIER_RE.match(value):
        return "must be letters, digits and underscores, not starting with a digit"
    return None


def _password(value: str) -> str | None:
    if not URL_SAFE_RE.match(value):
        return "may only contain letters, digits and - _ . ~ (it is placed in a URL unencoded)"
    return None


def _xml_safe_password(value: str) -> str | None:
    if "<" in value or "&" in value:
        return "contains < or &, which break ClickHouse's XML config (the value is parsed as XML)"
    if any(ch.isspace() for ch in value):
        return "contains white space"
    return None


def _secret_key(value: str) -> str | None:
    if any(ch.isspace() for ch in value) or "'" in value or '"' in value:
        return "must not contain white space or quotes"
    return None


def encryption_key_problem(entry: str) -> str | None:
    """Why one entry of ENCRYPTION_SALT_KEYS is wrong for PostHog, with the likely cause."""
    if ENCRYPTION_KEY_RE.match(entry):
        return None
    if entry == "":
        return "has an empty entry (check for a stray comma)"
    if any(ch in entry for ch in "+/="):
        return (f"has an entry of {len(entry)} characters containing + / or =: that is standard base64; "
                "PostHog needs exactly 32 characters of [A-Za-z0-9_-]")
    if len(entry) == 43:
        return ("has an entry of 43 characters, the output of `openssl rand -base64 32 | tr`: "
                "PostHog needs exactly 32 characters of [A-Za-z0-9_-]")
    if len(entry) == 44:
        return "has a 44-character entry (a Fernet key?): PostHog needs exactly 32 characters of [A-Za-z0-9_-]"
    return f"has an entry of {len(entry)} characters: PostHog needs exactly 32 characters of [A-Za-z0-9_-]"


def _encryption_key_list(value: str) -> str | None:
    for entry in value.split(","):
        problem = encryption_key_problem(entry)
        if problem:
            return problem
    return None


def _url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host, e.g. https://posthog.example.com"
    if parts.path not in ("", "/"):
        return "must not have a path (PostHog is served at the root)"
    _, colon, port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")
    if colon and port_number(port_text) is None:
        return "has a port that is not a number from 1 to 65535, e.g. https://posthog.example.com:8443"
    return None


def site_url_problem(value: str) -> str | None:
    """What is wrong with SITE_URL beyond the url format: PostHog builds every link from it."""
    parts = urlsplit(value)
    if "@" in parts.netloc:
        return "must not carry a user or password (it is shown in links, e-mails and the UI)"
    if parts.query or parts.fragment or "?" in value or "#" in value:
        return "must not have a ?query or #fragment (PostHog appends paths to it)"
    return None


def _postgres_url(value: str) -> str | None:
    return postgres_url_problem(value)


def _redis_url(value: str) -> str | None:
    return redis_url_problem(value)


def _port(value: str) -> str | None:
    return port_problem(value)


def _boolean(value: str) -> str | None:
    if value not in ("true", "false"):
        if value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return f"must be written true or false (found {value!r}; PostHog and Compose read other spellings inconsistently)"
        return "must be true or false"
    return None


def _set_means_true(value: str) -> str | None:
    # A name PostHog reads with os.getenv (TRUST_ALL_PROXIES at 1.43): any non-empty value is true.
    if value in ("", "true"):
        return None
    return (f"must be empty (off) or true: PostHog reads any non-empty value, {value!r} included, as true"
            if value else None)


def _integer(value: str) -> str | None:
    return number_problem(value)


def _memory_size(value: str) -> str | None:
    if not MEMORY_RE.match(value):
        return "must be a size such as 200mb, 1gb or 536870912"
    return None


def _image(value: str) -> str | None:
    if not IMAGE_RE.match(value):
        return "must be an image reference: name:tag or name@sha256:<64 hex>"
    return None


def _log_level(value: str) -> str | None:
    if value not in LOG_LEVELS:
        return "must be one of " + ", ".join(LOG_LEVELS)
    return None


def _hostname(value: str) -> str | None:
    return hostname_problem(value)


def _host_port(entry: str) -> bool:
    return host_port_entry(entry) is not None


def _host_port_list(value: str) -> str | None:
    if not all(_host_port(entry.strip()) for entry in value.split(",")):
        return "must be host:port entries separated by commas, e.g. kafka:9092"
    return None


def _listener_list(value: str) -> str | None:
    for entry in value.split(","):
        name, sep, address = entry.strip().partition("://")
        if not sep or not IDENTIFIER_RE.match(name) or not _host_port(address):
            return "must be NAME://host:port entries separated by commas, e.g. PLAINTEXT://kafka:9092"
    return None


def _ip_list(value: str) -> str | None:
    if value == "":
        return None
    for entry in value.split(","):
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            return f"{entry.strip()!r} is not an IP address or network; use comma-separated addresses"
    return None


# One entry of ALLOWED_IP_BLOCKS as both readers take it: PostHog 1.43 (Python's ipaddress, strict=False,
# posthog/middleware.py:75) and Caddy (Go's netip). Only the spelling both read the same way is accepted:
# dotted decimal without leading zeros (Python before 3.9.5 read 010 as 10, Go refuses it), hex IPv6 without
# a zone (%eth0), an optional prefix length in plain digits.
_IP_BLOCK_RE = re.compile(r"(?:[0-9.]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)(?:/(?:0|[1-9][0-9]{0,2}))?")
_LEADING_ZERO_RE = re.compile(r"(?:^|[.])0[0-9]")


def parse_ip_blocks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """ALLOWED_IP_BLOCKS as PostHog 1.43 reads it: split on commas and stripped (get_list,
    posthog/settings/utils.py:25-28), each entry an address or a network with host bits allowed
    (ip_network(block, strict=False), posthog/middleware.py:75). Empty: no allow-list. Raises ValueError
    naming the first entry that PostHog would fail on (an error on every request it judges) or that
    Caddy would read differently."""
    if not value:
        return []
    blocks = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            raise ValueError("holds an empty entry (two commas in a row, or a comma at an end): PostHog fails on "
                             "every request it judges")
        address = entry.split("/")[0]
        if not _IP_BLOCK_RE.fullmatch(entry) or ("." in address and ":" not in address
                                                 and _LEADING_ZERO_RE.search(address)):
            raise ValueError(f"{entry!r} is not an IP address or a network such as 203.0.113.0/24")
        try:
            blocks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or a network such as 203.0.113.0/24") from None
    return blocks


def _ip_block_list(value: str) -> str | None:
    try:
        parse_ip_blocks(value)
    except ValueError as exc:
        return str(exc)
    return None


def _datastore_mode(value: str) -> str | None:
    if value not in ("local", "external"):
        return "must be local (the service on this host) or external (a server elsewhere)"
    return None


def _container_path(value: str) -> str | None:
    if value == "":
        return None
    if not value.startswith("/") or any(c.isspace() for c in value) or "/../" in value + "/":
        return "must be an absolute path inside the containers, e.g. /etc/posthog/datastore-ca/ca.crt"
    return None


def _code_relative_path(value: str) -> str | None:
    if value == "":
        return None
    if value.startswith("/"):
        return ("must be relative to /code, PostHog's working folder (the plugin server joins it onto /code), "
                "e.g. ../etc/posthog/datastore-ca/ca.crt")
    if any(c.isspace() for c in value):
        return "must be a path without white space"
    return None


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _kafka_protocol(value: str) -> str | None:
    if value not in KAFKA_PROTOCOLS:
        return "must be one of " + ", ".join(KAFKA_PROTOCOLS) + " (in capitals)"
    return None


def _kafka_sasl_mechanism(value: str) -> str | None:
    if value == "":
        return None
    if value not in KAFKA_SASL_MECHANISMS:
        return ("must be one of " + ", ".join(KAFKA_SASL_MECHANISMS) +
                " in capitals (Django's Kafka client refuses other spellings)")
    return None


def _base64(value: str) -> str | None:
    if value == "":
        return None
    if len(value) % 4 or not BASE64_RE.match(value):
        return "must be base64 on one line (e.g. `base64 -w0 client.crt`)"
    return None


PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _profile_list(value: str) -> str | None:
    names = [name.strip() for name in value.split(",")]
    if not all(PROFILE_RE.match(name) for name in names):
        return "must be Compose profile names separated by commas, e.g. local"
    if "local" not in names:
        return "must include `local`, or no local datastore starts"
    if "external" in names:
        return "must not include `external`: it would start the services of the external datastores"
    return None


def _string(value: str) -> str | None:
    if "\n" in value:
        return "must be a single line"
    return None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("identifier", "letters, digits and underscores", _identifier),
        Format("password", "random string of letters, digits and - _ . ~ (safe unencoded in URLs)", _password),
        Format("xml-safe-password", "random string without `<`, `&` or white space (safe in ClickHouse XML)", _xml_safe_password),
        Format("secret-key", "long random string without white space or quotes (50+ characters)", _secret_key),
        Format("encryption-key-list", "comma-separated keys, each exactly 32 characters of [A-Za-z0-9_-]", _encryption_key_list),
        Format("url", "http:// or https:// URL without a path", _url),
        Format("postgres-url", "postgres://USER:PASSWORD@HOST:PORT/DB", _postgres_url),
        Format("redis-url", "redis://[:PASSWORD@]HOST:PORT/", _redis_url),
        Format("port", "TCP port, 1 to 65535", _port),
        Format("boolean", "true or false", _boolean),
        Format("set-means-true", "empty (off) or true: any non-empty value counts as true", _set_means_true),
        Format("integer", "whole number", _integer),
        Format("memory-size", "size such as 200mb or 1gb", _memory_size),
        Format("image", "container image reference: name:tag or name@sha256:digest", _image),
        Format("log-level", "ClickHouse log level: " + ", ".join(LOG_LEVELS), _log_level),
        Format("hostname", "host name", _hostname),
        Format("host-port-list", "comma-separated host:port", _host_port_list),
        Format("listener-list", "comma-separated NAME://host:port", _listener_list),
        Format("ip-list", "comma-separated IP addresses or networks (may be empty)", _ip_list),
        Format("ip-block-list", "comma-separated IP addresses and networks, e.g. 203.0.113.0/24,198.51.100.7 "
               "(empty: everyone)", _ip_block_list),
        Format("datastore-mode", "local or external", _datastore_mode),
        Format("container-path", "absolute path inside the containers (may be empty)", _container_path),
        Format("code-relative-path", "path relative to /code inside the PostHog containers (may be empty)", _code_relative_path),
        Format("kafka-protocol", "PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT", _kafka_protocol),
        Format("kafka-sasl-mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (may be empty)", _kafka_sasl_mechanism),
        Format("base64", "base64 on one line (may be empty)", _base64),
        Format("profile-list", "comma-separated Compose profiles, including local", _profile_list),
        Format("string", "single line of text", _string),
    )
}


def problem(format_name: str, value: str) -> str | None:
    """The problem with ``value`` for ``format_name``, or None when it fits."""
    return FORMATS[format_name].check(value)


# ----------------------------------------------------------------------------- hostile input
#: Names the environment (a shell, the dynamic linker, Docker, Compose, language runtimes) reads
#: itself: a variable of that name in .env changes how tools behave, not PostHog.
RESERVED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "HOSTNAME", "LANG", "LANGUAGE", "TERM", "IFS",
    "TMPDIR", "TEMP", "TMP", "MAIL", "SHLVL", "PS1", "PS2", "PS4", "ENV", "BASH_ENV", "CDPATH", "EDITOR",
    "NODE_OPTIONS", "NODE_PATH", "PERL5LIB", "PERL5OPT", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS", "GCONV_PATH",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "DISPLAY", "XDG_RUNTIME_DIR",
})
RESERVED_PREFIXES = ("LD_", "DOCKER_", "COMPOSE_", "PYTHON", "LC_", "BUILDKIT_", "BASH_FUNC_", "POSTHOG_COMPOSE_",
                     "GIT_", "PIP_", "INVOKE_", "DYLD_")


def reserved_name(name: str) -> str | None:
    """Why ``name`` may not be a deployment variable (the environment reads it), or None."""
    if name in RESERVED_NAMES:
        return f"{name} is read by the shell and the tools themselves, not by PostHog"
    prefix = next((p for p in RESERVED_PREFIXES if name.startswith(p)), None)
    if prefix:
        return f"names starting with {prefix} are read by the environment (linker, Docker, Compose, runtimes), not by PostHog"
    return None


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def text_problem(value: str) -> str | None:
    """Why a text from the manifest (description, example, ...) cannot be rendered safely, or None.

    Markdown and HTML specials are escaped when rendered; what cannot be made safe is refused:
    line breaks and control characters (they split the .env.example comment, the README table row
    and terminal output) and HTML comment markers (the README's generated section is delimited by
    them)."""
    if "\n" in value or "\r" in value:
        return "contains a line break; write one line"
    if _CONTROL_RE.search(value):
        return "contains a control or text-direction character"
    if "<!--" in value or "-->" in value or "GENERATED" in value and ("BEGIN" in value or "END" in value):
        return "contains an HTML comment marker (the README's generated section is delimited by them)"
    return None


def markdown_inline(text: str, table: bool = False) -> str:
    """``text`` safe as inline Markdown (and HTML): code spans stay code, `<`, `&` and link brackets
    are escaped, line breaks become spaces, and in a table cell every `|` is escaped."""
    import html

    text = _CONTROL_RE.sub(" ", str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    parts = text.split("`")
    balanced = len(parts) % 2 == 1
    if not balanced:  # unbalanced backticks: no code spans at all
        parts = [text]
    out = []
    for index, part in enumerate(parts):
        if index % 2:  # inside a code span: literal already; only the table's pipe matters
            out.append("`" + (part.replace("|", "\\|") if table else part) + "`")
            continue
        part = part.replace("\\", "\\\\")
        part = html.escape(part, quote=False)
        for ch in "[]{}" + ("" if balanced else "`"):
            part = part.replace(ch, "\\" + ch)
        if table:
            part = part.replace("|", "\\|")
        out.append(part)
    result = "".join(out).lstrip()
    # Not a heading, quote or list: a backslash before the marker's punctuation. Before a digit it
    # would show ("\14.1"), so an ordered-list number keeps its digits and escapes its dot.
    if re.match(r"[#>+=*-]", result):
        result = "\\" + result
    elif re.match(r"\d+[.)]", result):
        result = re.sub(r"^(\d+)([.)])", r"\1\\\2", result)
    return result


def markdown_code(value: str, table: bool = False) -> str:
    """``value`` shown as inline code, whatever characters it holds."""
    import html

    value = _CONTROL_RE.sub(" ", str(value).replace("\n", " ").replace("\r", " "))
    if "`" not in value and "|" not in value and "<" not in value and "&" not in value:
        return f"`{value}`"
    escaped = html.escape(value, quote=False).replace("`", "&#96;").replace("|", "&#124;")
    return f"<code>{escaped}</code>"


def low_variety(value: str) -> str | None:
    """Why a secret is guessable from its shape (one repeated character, a tiny alphabet, a short
    repeated pattern), or None. Generated secrets (62-64 symbols, 24+ characters) never match."""
    if not value:
        return None
    distinct = len(set(value))
    if distinct == 1:
        return f"is one character repeated {len(value)} times"
    for size in range(1, len(value) // 2 + 1):
        if len(value) % size == 0 and value[:size] * (len(value) // size) == value:
            return f"is a {size}-character pattern repeated"
    if len(value) >= 12 and distinct < max(6, len(value) // 6):
        return f"uses only {distinct} different characters"
    return None


def floating_tag(reference: str) -> str | None:
    """Why an image reference may move under the deployment, or None when it is pinned.

    Pinned: a digest, a version of at least two parts (`15.12-alpine`, `7.2`, `release-1.43.0`) or a
    commit SHA. Floating: no tag, `latest` in any spelling, a word-only tag (`alpine`, `stable`) and
    a major-only tag (`redis:7`, `postgres:15-alpine`) that follows every release."""
    ref = str(reference).strip()
    if "@sha256:" in ref:
        return None
    name = ref.rsplit("/", 1)[-1]
    if ":" not in name:
        return "has no tag (Docker pulls `latest`)"
    tag = name.rsplit(":", 1)[1]
    if re.fullmatch(r"[0-9a-f]{40}", tag):
        return None
    if not re.search(r"\d", tag):
        return f"uses the moving tag `{tag}`"
    if re.fullmatch(r"v?\d+([-_][A-Za-z][A-Za-z0-9_.-]*)?", tag):
        return f"uses `{tag}`, a major-version tag that moves with every release"
    if not re.search(r"\d+\.\d+", tag):
        return f"uses `{tag}`, which names no exact version"
    return None


def version_key(tag: str) -> tuple[int, ...] | None:
    """Numbers of a version tag (`release-1.43.0` -> (1, 43, 0)), or None when it has none."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", str(tag))
    if not match:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def is_downgrade(current: str, target: str) -> bool:
    """True when ``target`` is an older version than ``current`` (both version tags)."""
    old, new = version_key(current), version_key(target)
    return old is not None and new is not None and new < old


# Values that must never protect a production deployment.
KNOWN_WEAK_VALUES = frozenset({
    "00beef0000beef0000beef0000beef00",  # PostHog's built-in ENCRYPTION_SALT_KEYS default
    "<randomly generated secret key>",  # PostHog's hobby compose placeholder
    "posthog", "changeme", "change-me", "password", "secret", "admin", "default", "",
})
