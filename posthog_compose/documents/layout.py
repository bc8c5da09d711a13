"""The built pages' markup for reading on any screen, from a phone at 390 px up: what the theme's
HTML lacks and CSS alone cannot add (docs/css/handbook.css and docs/js/handbook.js do the rest).

- Every table and the architecture diagram sit in a container of their own that scrolls sideways,
  with a cue above it ("scroll sideways") that the script shows only when there is something to
  scroll, and a shadow at the edge that hides more (pure CSS, also without the script).
- Code wraps at spaces only: each run of non-space characters of a code block or of inline code is
  one unbreakable piece, so `--no-deps` never ends a line at `--no-`. A block's line longer than
  the screen still scrolls inside its block.
- Every code block gets a copy button (the script copies the block's text as written).
- The kit's version, for the footer: the package's version and `git describe` of the checkout the
  handbook is built from, read locally (no network).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PACKAGE = "posthog-compose"
SCROLL_HINT = '<div class="scroll-hint" aria-hidden="true">⇆ scroll sideways</div>'
# Inline code longer than this stays breakable anywhere: one unbreakable piece wider than a phone
# would push the whole page sideways.
LONGEST_UNBROKEN = 34

_TABLE = re.compile(r"<table>.*?</table>", re.S)
_PRE = re.compile(r"<pre>(<code[^>]*>)(.*?)(</code></pre>)", re.S)
_INLINE = re.compile(r"(?<!<pre>)(<code>)([^<]*)(</code>)")
_DIAGRAM = re.compile(r"(?:<p>)?(<svg [^>]*class=\"architecture\".*?</svg>)(?:</p>)?", re.S)
_TOKEN = re.compile(r"\S+")


def _pieces(text: str, longest: int | None = None) -> str:
    """Each run of non-space characters as one unbreakable span (entities never contain spaces)."""
    def piece(match: re.Match) -> str:
        token = match.group(0)
        if longest is not None and len(token) > longest:
            return token
        return f'<span class="nw">{token}</span>'

    return _TOKEN.sub(piece, text)


def _scroller(kind: str, inner: str) -> str:
    return (f'<div class="wide {kind}-wide">{SCROLL_HINT}'
            f'<div class="scroll {kind}-scroll" tabindex="0" role="region" aria-label="{kind}, scrolls sideways">'
            f"{inner}</div></div>")


def for_small_screens(html: str) -> str:
    html = _TABLE.sub(lambda m: _scroller("table", m.group(0)), html)
    html = _DIAGRAM.sub(lambda m: _scroller("diagram", m.group(1)), html)
    html = _PRE.sub(lambda m: ('<div class="code-block"><button type="button" class="copy-button" '
                               'aria-label="Copy this code">Copy</button>'
                               f"<pre>{m.group(1)}{_pieces(m.group(2))}{m.group(3)}</div>"), html)
    return _INLINE.sub(lambda m: m.group(1) + _pieces(m.group(2), LONGEST_UNBROKEN) + m.group(3), html)


def kit_version(root: Path) -> str:
    """`0.1.0 (git v0.1.0-12-gabc1234-dirty)`: the installed package's version, and where the checkout
    stands when it is one. Either part may be missing; neither needs the network."""
    from importlib import metadata

    parts = []
    try:
        parts.append(metadata.version(PACKAGE))
    except metadata.PackageNotFoundError:
        pass
    if (root / ".git").exists():
        try:
            described = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=root,
                                       capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            described = None
        if described is not None and described.returncode == 0 and described.stdout.strip():
            parts.append(f"(git {described.stdout.strip()})")
    return " ".join(parts) or "unknown"
