"""Masking: no secret value reaches the terminal. Every line a task prints, and every line the
processes it starts print (Compose, the engine), passes through one Masker.

The Masker is fed with every secret as Compose reads it and as it is written in .env, including
lines that do not parse (an unbalanced quote must not make a secret visible), the password part of
every URL, and each secret the task generates. It hides the whole value and every piece of it at
least ``MIN_FRAGMENT`` characters long.

Why 8: shorter windows would hide ordinary words whenever a secret contains one (a password
`postgres-2026` would hide every "postgr"), and the output would become unreadable; 8 characters of
a generated secret (62+ symbols) are at least 47 bits, and a printed piece shorter than 8 leaves a
32-character secret with more than 150 unknown bits. Whole values of 4 to 7 characters are hidden
where they appear in full; shorter ones and the public placeholders of .env.example are not secrets.

`shield(root)` installs the layer for the duration of a task (cli.friendly does it): a wrapper on
sys.stdout/sys.stderr, and a pipe (a pseudo-terminal when the output is a terminal) under file
descriptors 1 and 2, so that child processes' output is masked too.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import sys
import threading
from pathlib import Path
from urllib.parse import quote, unquote

MIN_FRAGMENT = 8
MIN_WHOLE = 4
MASK = "***"
# Names that hold secrets even when the manifest does not say so (an operator's own additions).
SECRET_NAME_RE = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|CREDENTIAL|(^|_)KEYS?$|_SALT)", re.IGNORECASE)
_PLACEHOLDER_RE = re.compile(r"^[\s{}$<>A-Z_]*$")
_LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*?)\s*$")
_REFERENCE_RE = re.compile(r"\$\{[^}]*\}?|\$[A-Za-z_][A-Za-z0-9_]*")


class Masker:
    """Hides registered secrets, and every piece of one at least MIN_FRAGMENT long, in text."""

    def __init__(self) -> None:
        self._whole: set[str] = set()
        self._windows: set[str] = set()
        self._public: set[str] = set()
        self._lock = threading.Lock()
        self._source = None  # a deployment whose secrets are learnt when the first text is masked
        self._learning = threading.Lock()

    def defer(self, root: Path) -> None:
        """Learn the secrets of the deployment at ``root`` (``secrets_of``) just before the first
        text is masked, not now: a task that prints nothing never reads them, and one that does
        reads them after its own work has parsed .env and the manifest (cached by their text)."""
        self._source = Path(root)

    def _learn(self) -> None:
        with self._learning:  # another thread masking meanwhile waits here, never masks without them
            root = self._source
            if root is None:
                return
            secrets, public = secrets_of(root)
            self.public(public)
            self.add_all(secrets)
            self._source = None

    def public(self, values) -> None:
        """Values known to everyone (placeholders, well-known defaults): never treated as secrets."""
        self._public.update(v for v in values if v)

    def add(self, value: str | None) -> None:
        if not value:
            return
        for variant in {value, value.strip(), unquote(value), quote(value, safe="")}:
            variant = variant.strip()
            if len(variant) < MIN_WHOLE or variant in self._public or variant.lower() in self._public:
                continue
            with self._lock:
                self._whole.add(variant)
                for i in range(len(variant) - MIN_FRAGMENT + 1):
                    self._windows.add(variant[i:i + MIN_FRAGMENT])

    def add_all(self, values) -> None:
        for value in values:
            self.add(value)

    def __bool__(self) -> bool:
        if self._source is not None:
            self._learn()
        return bool(self._whole)

    def mask(self, text: str) -> str:
        if self._source is not None and text:
            self._learn()
        if not self._whole or not text:
            return text
        with self._lock:
            whole = sorted(self._whole, key=len, reverse=True)
            windows = self._windows
        covered = bytearray(len(text))
        for secret in whole:
            if len(secret) >= MIN_FRAGMENT:
                continue  # its windows cover it
            start = text.find(secret)
            while start >= 0:
                covered[start:start + len(secret)] = b"\1" * len(secret)
                start = text.find(secret, start + 1)
        if windows:
            for i in range(len(text) - MIN_FRAGMENT + 1):
                if text[i:i + MIN_FRAGMENT] in windows:
                    covered[i:i + MIN_FRAGMENT] = b"\1" * MIN_FRAGMENT
        if not any(covered):
            return text
        out, i = [], 0
        while i < len(text):
            if covered[i]:
                while i < len(text) and covered[i]:
                    i += 1
                out.append(MASK)
            else:
                j = i
                while j < len(text) and not covered[j]:
                    j += 1
                out.append(text[i:j])
                i = j
        return "".join(out)


#: The process-wide masker: tasks and modules add the secrets they learn (e.g. generated ones).
MASKER = Masker()


def mask(text: str) -> str:
    return MASKER.mask(text)


def register(value: str | None) -> None:
    """A secret learned or made while a task runs (e.g. a generated password)."""
    MASKER.add(value)


#: Environment variables a task reads a secret from (the backup passphrase, operations/backup).
SECRET_ENVIRONMENT = ("POSTHOG_BACKUP_PASSPHRASE",)
_URL_START_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def register_option(value: str) -> None:
    """A value typed for a secret-bearing option (`--to`, a secret's `--value`), registered before
    the task reads it, so that no message about it can print it: the password part of a URL and
    every secret-named query parameter (`?password=`), or the whole value when it is not a URL.
    The rest of a URL stays readable: a plan names its host and database."""
    text = value.strip()
    if not _URL_START_RE.match(text) or any(ch.isspace() for ch in text):
        MASKER.add(value)  # not a URL (white space cannot be in one): all of it may be the secret
        return
    MASKER.add_all(url_passwords(text))  # the userinfo up to the last `@` ...
    userinfo = text.split("://", 1)[1].partition("@")
    if userinfo[1]:  # ... and up to the first, for a query that holds an `@` too
        MASKER.add(userinfo[0].partition(":")[2] or userinfo[0])
    for pair in re.split(r"[&;]", text.partition("?")[2]):
        key, _, secret = pair.partition("=")
        if secret and SECRET_NAME_RE.search(key):
            MASKER.add(secret)


def register_file_option(value: str) -> None:
    """A value typed for a `--...-file` option: a file name, unless no such file exists; then it
    may be the secret itself in the wrong place (a passphrase, a URL), and it is hidden like one
    (``register_option``). A file that exists keeps its name readable in messages."""
    try:
        exists = os.path.lexists(os.path.expanduser(value))
    except (ValueError, OSError):  # a NUL byte, a name too long: no file
        exists = False
    if not exists:
        register_option(value)


def register_environment() -> None:
    """The secrets a task may read from its environment (SECRET_ENVIRONMENT)."""
    for name in SECRET_ENVIRONMENT:
        MASKER.add(os.environ.get(name))


def is_secret_name(name: str, manifest_secrets: set[str] | frozenset = frozenset()) -> bool:
    return name in manifest_secrets or bool(SECRET_NAME_RE.search(name))


def url_passwords(value: str) -> list[str]:
    """The userinfo of every URL in ``value`` (password and user:password), as written and decoded.

    Read without urlsplit, which splits at the wrong `@` or `/` when a password holds one unencoded."""
    found = []
    for match in re.finditer(r"[A-Za-z][A-Za-z0-9+.-]*://(\S*)", value):
        rest = match.group(1)
        at = rest.rfind("@")
        if at < 0:
            continue
        userinfo = rest[:at]
        found.append(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo)
    return found


def secrets_of(root: Path) -> tuple[list[str], list[str]]:
    """Every secret of the deployment at ``root`` and the public values: (secrets, public).

    Reads .env as text line by line (so a line that does not parse still gives its value), then as
    python-dotenv and Compose read it; never raises."""
    root = Path(root)
    secret_names: set[str] = set()
    public: list[str] = []
    try:
        from posthog_compose.configuration import manifest as manifest_module
        from posthog_compose.configuration.formats import KNOWN_WEAK_VALUES

        manifest = manifest_module.load(root)
        secret_names = {v.name for v in manifest.secrets}
        public = [str(v.default) for v in manifest.variables if v.default] + list(KNOWN_WEAK_VALUES)
    except Exception:  # noqa: BLE001 - a broken manifest must not stop the masking
        pass
    found: list[str] = []
    try:
        raw = (root / ".env").read_bytes().decode("utf-8", "replace")
    except OSError:
        return found, public
    for line in raw.splitlines():
        found.extend(url_passwords(line))
        match = _LINE_RE.match(line)
        if not match:
            # a continuation of a multi-line value, or garbage: its words may be a secret's tail
            if line.strip() and not line.lstrip().startswith("#") and "=" not in line:
                found.append(line.strip().strip("'\""))
            continue
        name, value = match.groups()
        if not is_secret_name(name, secret_names):
            continue
        if name.endswith("_URL"):
            continue  # the password part was taken above; the rest of a URL is not secret
        found.append(value)
        found.append(value.strip("'\""))
        if " #" in value:
            found.append(value.split(" #", 1)[0].strip("'\""))
        for part in value.strip("'\"").split(","):
            found.append(part)
    try:
        from posthog_compose.configuration.envfile import EnvFile

        env = EnvFile.parse(raw)
        for name, value in env.resolved().items():
            if is_secret_name(name, secret_names) and not name.endswith("_URL"):
                found.append(value)
                found.extend(value.split(","))
            found.extend(url_passwords(value))
    except Exception:  # noqa: BLE001
        pass
    literal = []
    for value in found:  # `${OTHER}` references are names, not secrets: the literal pieces count too
        literal.append(value)
        literal.extend(piece for piece in _REFERENCE_RE.split(value) if piece)
    # placeholders such as USER:PASSWORD or {POSTGRES_PASSWORD} in the file's own comments are not secrets
    return [piece for piece in literal if not _PLACEHOLDER_RE.match(piece)], public


def prime(root: Path) -> None:
    secrets, public = secrets_of(root)
    MASKER.public(public)
    MASKER.add_all(secrets)


# ----------------------------------------------------------------------------- the streams
class _MaskingStream(io.TextIOBase):
    """A text stream that masks whole lines before passing them on (partial lines on flush)."""

    def __init__(self, target) -> None:
        self._target = target
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        if "\n" in self._buffer or "\r" in self._buffer:
            cut = max(self._buffer.rfind("\n"), self._buffer.rfind("\r")) + 1
            done, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._target.write(MASKER.mask(done))
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._target.write(MASKER.mask(self._buffer))
            self._buffer = ""
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self):
        return getattr(self._target, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self._target, "errors", "strict")

    def writable(self) -> bool:
        return True


class _FdPump:
    """File descriptor ``fd`` redirected into a pipe (or pty) whose lines are masked and written to
    the original descriptor by a thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = os.dup(fd)
        if os.isatty(self.saved):
            import tty

            self.read_end, write_end = os.openpty()
            try:
                tty.setraw(write_end)
                _copy_winsize(self.saved, write_end)
            except Exception:  # noqa: BLE001
                pass
        else:
            self.read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self.read_end], [], [], 0.05 if pending else None)
            if not ready:
                self._emit(pending)  # a prompt without a newline: show it now
                pending = b""
                continue
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            if cut:
                self._emit(pending[:cut])
                pending = pending[cut:]
        self._emit(pending)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        text = MASKER.mask(data.decode("utf-8", "replace"))
        view = memoryview(text.encode("utf-8"))
        while view:
            try:
                written = os.write(self.saved, view)
            except OSError:
                return
            view = view[written:]

    def stop(self) -> None:
        os.dup2(self.saved, self.fd)  # closes our write end; the pump sees the end once children close theirs
        self.thread.join(timeout=2)
        os.close(self.saved)
        if not self.thread.is_alive():
            os.close(self.read_end)


def _copy_winsize(source: int, target: int) -> None:
    import fcntl
    import termios

    size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
    fcntl.ioctl(target, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def shield(root: Path, fds: tuple[int, ...] = (1, 2)):
    """Mask everything printed while the block runs (by this process and the processes it starts).
    The deployment's secrets are read when the first line is printed (Masker.defer). ``fds`` are the
    descriptors the started processes' output is masked on (``(2,)`` leaves a binary stdout intact)."""
    MASKER.defer(root)
    old_out, old_err = sys.stdout, sys.stderr
    pumps = []
    if os.environ.get("POSTHOG_COMPOSE_NO_FD_MASK") != "1":
        for fd in fds:
            try:
                os.fstat(fd)
            except OSError:
                continue
            try:
                old = (old_out if fd == 1 else old_err)
                if old is not None:
                    old.flush()
                pumps.append(_FdPump(fd))
            except OSError:
                pass
    sys.stdout, sys.stderr = _MaskingStream(old_out), _MaskingStream(old_err)
    try:
        yield MASKER
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = old_out, old_err
        for pump in pumps:
            pump.stop()


def quoted_secrets(root: Path) -> list[str]:
    """Each secret of .env written in quotes, with exactly that one pair of quotes taken off, as
    Compose reads it. (``secrets_of`` strips every quote at either end, which loses a `"` or `'`
    that belongs to the secret itself: a short one would then be learnt without it, or not at all.)"""
    manifest_secrets: set[str] = set()
    try:
        from posthog_compose.configuration import manifest as manifest_module

        manifest_secrets = {v.name for v in manifest_module.load(root).secrets}
    except Exception:  # noqa: BLE001 - a broken manifest must not stop the masking
        pass
    try:
        raw = (Path(root) / ".env").read_bytes().decode("utf-8", "replace")
    except OSError:
        return []
    found = []
    for line in raw.splitlines():
        match = _LINE_RE.match(line)
        if not match or not is_secret_name(match.group(1), manifest_secrets):
            continue
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            found.append(value[1:-1])
    return found
