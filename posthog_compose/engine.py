"""Running external commands (docker, docker compose, pg_dump inside containers).

Every command is an argument list, never a shell string, so no value from .env or the
command line is ever interpreted by a shell. `--dry-run` prints commands instead of running
them; `-v` prints them as they run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import OperatorError


@dataclass
class Runner:
    """Runs commands for a task, honouring --dry-run and --verbose."""

    cwd: Path
    dry_run: bool = False
    verbose: bool = False
    env: dict[str, str] | None = None

    def show(self, cmd: list[str]) -> None:
        print(f"$ {shlex.join(cmd)}", file=sys.stderr if not self.dry_run else sys.stdout, flush=True)

    def run(self, cmd: list[str], *, capture: bool = False, check: bool = True, input: str | None = None,
            mutating: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd``. In dry-run mode a ``mutating`` command is only printed; read-only
        commands (``mutating=False``) still run so the plan can be computed."""
        if self.dry_run and mutating:
            self.show(cmd)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if self.verbose:
            self.show(cmd)
        try:
            result = subprocess.run(
                cmd, cwd=self.cwd, env=self.env, input=input, text=True, timeout=timeout,
                stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
            )
        except FileNotFoundError:
            raise OperatorError(f"`{cmd[0]}` is not installed or not on PATH; run `invoke doctor` for what is needed")
        except subprocess.TimeoutExpired:
            raise OperatorError(f"`{shlex.join(cmd[:4])} ...` did not finish within {timeout:.0f} s")
        if check and result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
            raise OperatorError(f"`{shlex.join(cmd[:4])}{' ...' if len(cmd) > 4 else ''}` failed "
                                f"(exit {result.returncode}){': ' + detail[0] if detail else ''}")
        return result

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        if self.verbose or self.dry_run:
            self.show(cmd)
        try:
            return subprocess.Popen(cmd, cwd=self.cwd, env=self.env, **kwargs)
        except FileNotFoundError:
            raise OperatorError(f"`{cmd[0]}` is not installed or not on PATH; run `invoke doctor` for what is needed")


def which(program: str) -> str | None:
    return shutil.which(program)


def docker_env() -> dict[str, str]:
    """The environment for docker commands: ours, unchanged (DOCKER_HOST is honoured)."""
    return dict(os.environ)
