#!/usr/bin/env python3
"""Benchmarks as ratios against a baseline measured in the same run, on the same machine.

    python scripts/bench.py [--runs N] [CASE ...]

Cases (name: measured vs baseline, goal):
  config-check: `invoke config-check`      vs `docker compose config --quiet` on the same files (<= 3x)
  config-floor: `invoke config-check`      vs an empty Invoke task: what the checks add         (<= 1.5x)
  list:         `invoke --list` here       vs `invoke --list` in an empty Invoke project        (<= 1.3x)
  up:           `invoke up` from scratch   vs `docker compose up -d --wait` from scratch          (<= 1.1x)
                (only when named: it starts a private Docker Engine with the e2e test images)
  status:       `invoke status` on a running stack vs `docker compose ps --all` (the listing alone)    (<= 4x)
                (only when named: a private engine with the e2e test images; status makes a write in
                each datastore, compares with the files and measures the disk, all at once)
  proxy:        a request through the edge proxy (HTTPS) vs the same request straight to web, p50 of
                200 requests each, a new connection each and on one kept-alive connection (<= +5 ms)
                (only when named: a private engine, the e2e images, the pinned Caddy release)
`--package DIR` times the package of another checkout of the kit (DIR holds its posthog_compose/), to
compare a change with the code before it in the same way; `status --against DIR` makes the status case's
baseline `invoke status` with DIR's package, alternating with this one's on the same stack (the fairest
before/after on a machine whose load changes).
Measured and baseline runs alternate, so a change in the machine's load touches both; the
medians and their ratio are printed. This is a measurement, not a test: it never fails on a
slow machine, it reports.
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


def timed_pair(measured: tuple[list[str], Path], baseline: tuple[list[str], Path], env: dict, runs: int,
               before=None) -> tuple[float, float]:
    """Median wall times of two commands over ``runs`` alternating runs (after one warm-up each).
    ``before`` runs untimed before every run (e.g. to reset the state both start from)."""
    samples: dict[int, list[float]] = {0: [], 1: []}
    for round_number in range(runs + 1):
        for index, (cmd, cwd) in enumerate((measured, baseline)):
            if before:
                before()
            start = time.perf_counter()
            result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                raise SystemExit(f"bench: `{' '.join(cmd)}` failed: {result.stderr.strip()[-300:]}")
            if round_number:  # round 0 warms caches up
                samples[index].append(elapsed)
    return statistics.median(samples[0]), statistics.median(samples[1])


def deployment_copy(workdir: Path) -> Path:
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import manifest
    from tests.conftest import copy_repository

    root = workdir / "deployment"
    root.mkdir()
    copy_repository(root)
    bootstrap.init(root, manifest.load(root))
    return root


def case_config_check(workdir: Path, env: dict, runs: int):
    from posthog_compose.configuration import compose

    root = deployment_copy(workdir)
    env = {**env, "POSTHOG_COMPOSE_ROOT": str(root)}
    measured, baseline = timed_pair(([sys.executable, "-m", "invoke", "config-check"], root),
                                    (compose.command(root, "config", "--quiet"), root), env, runs)
    return "invoke config-check", measured, "docker compose config --quiet", baseline, 3.0


def case_list(workdir: Path, env: dict, runs: int):
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "tasks.py").write_text('from invoke import task\n\n\n@task\ndef hello(c):\n    """Say hello."""\n')
    measured, baseline = timed_pair(([sys.executable, "-m", "invoke", "--list"], REPO),
                                    ([sys.executable, "-m", "invoke", "--list"], empty), env, runs)
    return "invoke --list (this project)", measured, "invoke --list (empty project)", baseline, 1.3


def case_config_check_floor(workdir: Path, env: dict, runs: int):
    """What config-check adds over the unavoidable cost of starting Python and Invoke at all."""
    root = deployment_copy(workdir)
    env = {**env, "POSTHOG_COMPOSE_ROOT": str(root)}
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "tasks.py").write_text('from invoke import task\n\n\n@task\ndef noop(c):\n    """Do nothing."""\n')
    measured, baseline = timed_pair(([sys.executable, "-m", "invoke", "config-check"], root),
                                    ([sys.executable, "-m", "invoke", "noop"], empty), env, runs)
    return "invoke config-check", measured, "invoke noop (empty project)", baseline, 1.5


def case_up(workdir: Path, env: dict, runs: int):
    """The whole stack from nothing (fresh volumes each run) on a private engine with the test images."""
    from posthog_compose.configuration import compose
    from tests.e2e.harness import make_deployment, start_engine, stop_engine

    engine = start_engine()
    try:
        deployment = make_deployment(workdir / "deployment", engine)
        root = deployment.root
        env = {**env, **engine.env, "POSTHOG_COMPOSE_ROOT": str(root)}

        def reset():
            subprocess.run(compose.command(root, "down", "--volumes", "--timeout", "5"), cwd=root, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

        measured, baseline = timed_pair(([sys.executable, "-m", "invoke", "up"], root),
                                        (compose.command(root, "up", "--detach", "--wait"), root), env,
                                        max(1, min(runs, 3)), before=reset)
        reset()
    finally:
        stop_engine(engine)
    return "invoke up", measured, "docker compose up -d --wait", baseline, 1.1


def case_status(workdir: Path, env: dict, runs: int):
    """The whole `invoke status` on a healthy running stack (private engine, test images) against the
    Compose listing it starts from: what the verdicts cost (write probes, drift, disk, readiness)."""
    from posthog_compose.configuration import compose
    from tests.e2e.harness import make_deployment, start_engine, stop_engine

    engine = start_engine()
    try:
        deployment = make_deployment(workdir / "deployment", engine)
        root = deployment.root
        started = deployment.invoke("up")
        if started.returncode != 0:
            raise SystemExit(f"bench: invoke up failed: {(started.stdout + started.stderr)[-400:]}")
        env = {**env, **engine.env, "POSTHOG_COMPOSE_ROOT": str(root)}
        status = [sys.executable, "-m", "invoke", "status"]
        if AGAINST:  # the other checkout's package, through a wrapper that puts it first on the path
            other = [sys.executable, "-c", "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
                     "runpy.run_module('invoke', run_name='__main__')", str(AGAINST), "status"]
            measured, baseline = timed_pair((status, root), (other, root), env, runs)
            return "invoke status (this package)", measured, "invoke status (--against)", baseline, 1.0
        measured, baseline = timed_pair((status, root), (compose.command(root, "ps", "--all", "--format", "json"),
                                                         root), env, runs)
    finally:
        stop_engine(engine)
    return "invoke status (running stack)", measured, "docker compose ps --all", baseline, 4.0


def _latencies(connect, path: str, count: int, keep_alive: bool) -> list[float]:
    """Seconds per request of ``count`` GETs of ``path``: one every 20 ms on a new connection each,
    or back to back on one kept-alive connection. Bounded in count and time."""
    samples = []
    connection = connect() if keep_alive else None
    for _ in range(count):
        started = time.perf_counter()
        conn = connection or connect()
        conn.request("GET", path, headers={"X-Forwarded-Proto": "https"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"bench: {path} answered {response.status}")
        samples.append(time.perf_counter() - started)
        if not keep_alive:
            conn.close()
            time.sleep(0.02)
    if connection:
        connection.close()
    return samples


def case_proxy(workdir: Path, env: dict, runs: int):
    """The edge proxy's cost per request: PostHog's /_livez (no datastore behind it) through Caddy over
    HTTPS against the same request straight to web's address on the proxy's network, in one run."""
    import http.client
    import json
    import random
    import socket
    import ssl

    from tests.e2e.harness import free_port, make_deployment, start_engine, stop_engine

    engine = start_engine()
    details = []
    try:
        deployment = make_deployment(workdir / "deployment", engine)
        https_port, third = free_port(), random.randint(1, 250)
        deployment.set_env(PROXY_HTTP_PORT=str(free_port()), PROXY_HTTPS_PORT=str(https_port),
                           PROXY_SUBNET=f"10.254.{third}.0/29", PROXY_ADDRESS=f"10.254.{third}.6")
        for args in (("up",), ("proxy", "--enable", "--domain", "posthog.test")):
            result = deployment.invoke(*args)
            if result.returncode != 0:
                raise SystemExit(f"bench: invoke {' '.join(args)} failed: {(result.stdout + result.stderr)[-400:]}")
        container = deployment.compose("ps", "-q", "web").stdout.strip()
        networks = json.loads(engine.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container).stdout)
        web = next(value["IPAddress"] for name, value in networks.items() if name.endswith("_edge"))
        context = ssl.create_default_context(cafile=str(deployment.root / "certs" / "ca.crt"))

        # Both clients set TCP_NODELAY, as browsers, curl and HTTP libraries do. Without it, the client's
        # own Nagle algorithm holds the request behind the last TLS handshake message until the server's
        # delayed ACK (about 40 ms): a new HTTPS connection then looks 40-50 ms slower through any proxy.
        def nodelay(address, timeout):
            sock = socket.create_connection(address, timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        class ToLoopback(http.client.HTTPSConnection):
            """HTTPS to the proxy's published port on loopback, for the name posthog.test (SNI and Host)."""

            def connect(self):
                self.sock = self._context.wrap_socket(nodelay(("127.0.0.1", self.port), self.timeout),
                                                      server_hostname=self.host)

        class Direct(http.client.HTTPConnection):
            def connect(self):
                self.sock = nodelay((self.host, self.port), self.timeout)

        def through_proxy():
            return ToLoopback("posthog.test", https_port, context=context, timeout=10)

        def direct():
            return Direct(web, 8000, timeout=10)

        count = max(50, min(200, runs * 20))
        results = {}
        for keep_alive in (False, True):
            for name, connect in (("direct", direct), ("proxy", through_proxy)):
                samples = sorted(_latencies(connect, "/_livez", count, keep_alive))
                results[name, keep_alive] = samples
            mode = "kept-alive connection" if keep_alive else "new connection each"
            (d50, d99), (p50, p99) = ((statistics.median(s), s[int(len(s) * 0.99) - 1])
                                      for s in (results["direct", keep_alive], results["proxy", keep_alive]))
            details.append(f"  proxy, {mode}: direct p50 {d50 * 1000:.2f} ms p99 {d99 * 1000:.2f} ms; through the "
                           f"proxy p50 {p50 * 1000:.2f} ms p99 {p99 * 1000:.2f} ms; p50 +{(p50 - d50) * 1000:.2f} ms")
        measured = statistics.median(results["proxy", False])
        baseline = statistics.median(results["direct", False])
    finally:
        stop_engine(engine)
    return "/_livez via proxy, new conn.", measured, "/_livez straight to web", baseline, 0.005, details


#: --against: another checkout whose package the status case times as its baseline.
AGAINST: Path | None = None

CASES = {"config-check": case_config_check, "config-floor": case_config_check_floor, "list": case_list,
         "up": case_up, "status": case_status, "proxy": case_proxy}
DEFAULT_CASES = ("config-check", "config-floor", "list")  # `up` needs an engine: run it by name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run: {', '.join(CASES)} (default: {', '.join(DEFAULT_CASES)})")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (median is reported)")
    parser.add_argument("--package", type=Path, default=REPO,
                        help="a checkout of the kit whose package the tasks run (default: this one)")
    parser.add_argument("--against", type=Path, help="status case: time DIR's package as the baseline")
    args = parser.parse_args()
    global AGAINST
    AGAINST = args.against.resolve() if args.against else None
    if not (args.package / "posthog_compose").is_dir():
        parser.error(f"--package {args.package}: no posthog_compose/ there")
    env = {**os.environ, "PYTHONPATH": str(args.package.resolve()) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # An operator's install keeps Python's bytecode caches; a shell that disables them would time
    # the compilation of every module on every run instead. The warm-up round writes the caches.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(f"{'case':<14} {'measured':<30} {'median':>8}   {'baseline':<32} {'median':>8}   ratio  goal")
        for name in args.cases or DEFAULT_CASES:
            if name not in CASES:
                parser.error(f"unknown case {name!r}; known: {', '.join(CASES)}")
            (workdir / name).mkdir()
            label, measured, base_label, baseline, goal, *details = CASES[name](workdir / name, env, args.runs)
            ratio = measured / baseline
            if details:  # a latency case: its goal is a difference in seconds, not a ratio
                verdict = "ok" if measured - baseline <= goal else "OVER"
                print(f"{name:<14} {label:<30} {measured * 1000:>6.2f}ms   {base_label:<32} {baseline * 1000:>6.2f}ms"
                      f"   {ratio:4.2f}x +{(measured - baseline) * 1000:.2f}ms <=+{goal * 1000:.0f}ms {verdict}")
                print("\n".join(details[0]))
                continue
            verdict = "ok" if ratio <= goal else "OVER"
            print(f"{name:<14} {label:<30} {measured * 1000:>6.0f}ms   {base_label:<32} {baseline * 1000:>6.0f}ms"
                  f"   {ratio:4.2f}x <={goal}x {verdict}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
