#!/usr/bin/env python3
"""Benchmarks as ratios against a baseline measured in the same run, on the same machine.

    python scripts/bench.py [--runs N] [CASE ...]

Cases (name: measured vs baseline, goal):
  config-check: `invoke config-check`      vs `docker compose config --quiet` on the same files (<= 3x)
  config-floor: `invoke config-check`      vs an empty Invoke task: what the checks add         (<= 1.5x)
  list:         `invoke --list` here       vs `invoke --list` in an empty Invoke project        (<= 1.3x)
Each command runs several times; the medians and their ratio are printed. This is a
measurement, not a test: it never fails on a slow machine, it reports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(cmd: list[str], cwd: Path, env: dict, runs: int) -> float:
    """Median wall time of ``cmd`` over ``runs`` runs (after one warm-up run)."""
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def deployment_copy(workdir: Path) -> Path:
    from posthog_compose import bootstrap, manifest
    from tests.conftest import copy_repository

    root = workdir / "deployment"
    root.mkdir()
    copy_repository(root)
    bootstrap.init(root, manifest.load(root))
    return root


def case_config_check(workdir: Path, env: dict, runs: int):
    from posthog_compose import compose

    root = deployment_copy(workdir)
    env = {**env, "POSTHOG_COMPOSE_ROOT": str(root)}
    measured = timed([sys.executable, "-m", "invoke", "config-check"], root, env, runs)
    baseline = timed(compose.command(root, "config", "--quiet"), root, env, runs)
    return "invoke config-check", measured, "docker compose config --quiet", baseline, 3.0


def case_list(workdir: Path, env: dict, runs: int):
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "tasks.py").write_text('from invoke import task\n\n\n@task\ndef hello(c):\n    """Say hello."""\n')
    measured = timed([sys.executable, "-m", "invoke", "--list"], REPO, env, runs)
    baseline = timed([sys.executable, "-m", "invoke", "--list"], empty, env, runs)
    return "invoke --list (this project)", measured, "invoke --list (empty project)", baseline, 1.3


def case_config_check_floor(workdir: Path, env: dict, runs: int):
    """What config-check adds over the unavoidable cost of starting Python and Invoke at all."""
    root = deployment_copy(workdir)
    env = {**env, "POSTHOG_COMPOSE_ROOT": str(root)}
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "tasks.py").write_text('from invoke import task\n\n\n@task\ndef noop(c):\n    """Do nothing."""\n')
    measured = timed([sys.executable, "-m", "invoke", "config-check"], root, env, runs)
    baseline = timed([sys.executable, "-m", "invoke", "noop"], empty, env, runs)
    return "invoke config-check", measured, "invoke noop (empty project)", baseline, 1.5


CASES = {"config-check": case_config_check, "config-floor": case_config_check_floor, "list": case_list}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run: {', '.join(CASES)} (default: all)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (median is reported)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(f"{'case':<14} {'measured':<30} {'median':>8}   {'baseline':<32} {'median':>8}   ratio  goal")
        for name in args.cases or list(CASES):
            if name not in CASES:
                parser.error(f"unknown case {name!r}; known: {', '.join(CASES)}")
            (workdir / name).mkdir()
            label, measured, base_label, baseline, goal = CASES[name](workdir / name, env, args.runs)
            ratio = measured / baseline
            verdict = "ok" if ratio <= goal else "OVER"
            print(f"{name:<14} {label:<30} {measured * 1000:>6.0f}ms   {base_label:<32} {baseline * 1000:>6.0f}ms"
                  f"   {ratio:4.2f}x <={goal}x {verdict}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
