#!/usr/bin/env python3
"""Benchmark of `invoke backup` and `invoke restore` as ratios against the bare commands they wrap,
measured in one run on the same data (a private Docker Engine with the e2e test images).

    python scripts/bench_backup.py [--gib 1.0] [--rounds 2] [--json FILE]

Data: a PostgreSQL table of random text (pg_dump cannot compress it much) and a ClickHouse
table of random TSV in the ClickHouse stand-in, together at least --gib GiB on disk.

  backup:  `invoke backup` (encrypted)   vs  pg_dump > file  plus  tar of the ClickHouse volume > file
  restore: `invoke restore --yes`        vs  down --volumes, up db, pg_restore < dump, tar -x of the
                                             ClickHouse volume, up --wait (the same end state: healthy)

Measured and bare runs alternate, so a change in the machine's load touches both; the medians,
their ratio (goal: at most 1.3x) and the throughput are printed. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSPHRASE = "benchmark passphrase, not a secret"
MIB = 1024 ** 2


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def fill(deployment, gib: float) -> None:
    """Random data: a quarter in PostgreSQL, the rest as ClickHouse parts."""
    target = int(gib * 1024 ** 3)
    pg_rows = int(target * 0.25 / 1100)
    log(f"writing {pg_rows:,} PostgreSQL rows ...")
    deployment.psql("CREATE TABLE bench_rows (id bigint primary key, payload text); "
                    "ALTER TABLE bench_rows ALTER COLUMN payload SET STORAGE EXTERNAL; "
                    f"INSERT INTO bench_rows SELECT n, (SELECT string_agg(md5(random()::text || n || g), '') "
                    f"FROM generate_series(1, 32) g) FROM generate_series(1, {pg_rows}) n;")
    deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query",
                       "CREATE TABLE default.bench_events (id Int64, payload String) ENGINE = MergeTree ORDER BY id")
    batch = 64 * MIB
    written, number = 0, 0
    ch_target = target - pg_rows * 1100
    log(f"writing {ch_target / MIB:,.0f} MiB of ClickHouse parts ...")
    import base64

    while written < ch_target:
        lines = []
        size = 0
        while size < batch:
            number += 1
            line = f"{number}\t{base64.b64encode(os.urandom(750)).decode()}\n"
            lines.append(line)
            size += len(line)
        subprocess.run(__import__("posthog_compose.configuration.compose", fromlist=["command"]).command(
            deployment.root, "exec", "-T", "clickhouse", "clickhouse-client", "--query",
            "INSERT INTO default.bench_events FORMAT TSV"), input="".join(lines).encode(), cwd=deployment.root,
            env=deployment.env, check=True, capture_output=True)
        written += size


def timed(function) -> float:
    started = time.monotonic()
    function()
    return time.monotonic() - started


def dataset_sizes(engine, values) -> dict[str, int]:
    """Bytes on disk of the PostgreSQL and ClickHouse volumes."""
    sizes = {}
    for volume in ("postgres-data", "clickhouse-data"):
        out = engine.docker("run", "--rm", "-v", f"posthog_{volume}:/v:ro", "--entrypoint", "du",
                            values["POSTGRES_IMAGE"], "-sb", "/v").stdout
        sizes[volume] = int(out.split()[0])
    return sizes


def bare_backup(deployment, engine, values, bare_dir: Path) -> None:
    """What an operator would type without the kit: pg_dump, and a tar of ClickHouse's volume."""
    from posthog_compose.configuration import compose

    with open(bare_dir / "db.dump", "wb") as handle:
        subprocess.run(compose.command(deployment.root, "exec", "-T", "db", "pg_dump", "-U",
                                       values["POSTGRES_USER"], "-d", values["POSTGRES_DB"],
                                       "--format=custom"), stdout=handle, env=engine.env, check=True,
                       cwd=deployment.root)
    with open(bare_dir / "clickhouse.tar", "wb") as handle:
        subprocess.run(["docker", "run", "--rm", "--network", "none", "-v",
                        "posthog_clickhouse-data:/var/lib/clickhouse:ro", "--entrypoint", "tar",
                        values["CLICKHOUSE_IMAGE"], "-C", "/var/lib/clickhouse", "-cf", "-", "."],
                       stdout=handle, env=engine.env, check=True)


def bare_restore(deployment, engine, values, bare_dir: Path) -> None:
    """The bare restore of what bare_backup wrote: empty volumes, pg_restore, tar back, up."""
    from posthog_compose.configuration import compose

    deployment.compose("down", "--volumes", "--timeout", "10")
    deployment.compose("up", "--detach", "--wait", "db")
    with open(bare_dir / "db.dump", "rb") as handle:
        subprocess.run(compose.command(deployment.root, "exec", "-T", "db", "pg_restore", "-U",
                                       values["POSTGRES_USER"], "-d", values["POSTGRES_DB"],
                                       "--single-transaction"), stdin=handle, env=engine.env, check=True,
                       cwd=deployment.root)
    with open(bare_dir / "clickhouse.tar", "rb") as handle:
        subprocess.run(compose.command(deployment.root, "run", "--rm", "--no-deps", "-T", "--entrypoint",
                                       "tar", "clickhouse", "-C", "/var/lib/clickhouse", "-xf", "-"),
                       stdin=handle, env=engine.env, check=True, cwd=deployment.root, capture_output=True)
    deployment.compose("up", "--detach", "--wait", "--wait-timeout", "600")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="dataset size in GiB (default 1.0)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (default 2)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from tests.e2e.harness import make_deployment, start_engine, stop_engine

    engine = start_engine()
    engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"] = PASSPHRASE
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    deployment = make_deployment(work / "deployment", engine)
    values = deployment.values()
    figures: dict = {"rounds": []}
    try:
        result = deployment.invoke("up", "--timeout", "600")
        if result.returncode != 0:
            raise SystemExit(f"invoke up failed: {result.stderr[-500:]}")
        fill(deployment, args.gib)
        sizes = dataset_sizes(engine, values)
        figures["dataset_bytes"] = sizes
        log(f"dataset: {sum(sizes.values()) / MIB:,.0f} MiB on disk ({sizes})")
        bare_dir = work / "bare"
        bare_dir.mkdir()

        def bare_backup_here():
            bare_backup(deployment, engine, values, bare_dir)

        archives: list[str] = []

        def our_backup():
            made = deployment.invoke("backup", "--json")
            if made.returncode != 0:
                raise SystemExit(f"invoke backup failed: {made.stderr[-500:]}")
            archives.append(json.loads(made.stdout)["archive"])

        def bare_restore_here():
            bare_restore(deployment, engine, values, bare_dir)

        def our_restore():
            done = deployment.invoke("restore", archives[-1], "--yes")
            if done.returncode != 0:
                raise SystemExit(f"invoke restore failed: {done.stderr[-500:]}")

        for number in range(args.rounds):
            round_figures = {}
            for name, function in (("bare_backup", bare_backup_here), ("backup", our_backup),
                                   ("bare_restore", bare_restore_here), ("restore", our_restore)):
                round_figures[name] = round(timed(function), 2)
                log(f"round {number + 1}: {name} {round_figures[name]:.1f} s")
            round_figures["archive_bytes"] = Path(archives[-1]).stat().st_size
            figures["rounds"].append(round_figures)
            Path(archives[-1]).unlink()
        for name in ("bare_backup", "backup", "bare_restore", "restore"):
            figures[name] = statistics.median(r[name] for r in figures["rounds"])
        data = sum(sizes.values())
        figures["backup_ratio"] = round(figures["backup"] / figures["bare_backup"], 2)
        figures["restore_ratio"] = round(figures["restore"] / figures["bare_restore"], 2)
        figures["backup_mib_per_s"] = round(data / MIB / figures["backup"], 1)
        figures["restore_mib_per_s"] = round(data / MIB / figures["restore"], 1)
        print(f"dataset {data / MIB:,.0f} MiB; archive {figures['rounds'][-1]['archive_bytes'] / MIB:,.0f} MiB")
        print(f"backup:  {figures['backup']:.1f} s vs bare {figures['bare_backup']:.1f} s = "
              f"{figures['backup_ratio']:.2f}x (goal <= 1.3x), {figures['backup_mib_per_s']} MiB/s")
        print(f"restore: {figures['restore']:.1f} s vs bare {figures['bare_restore']:.1f} s = "
              f"{figures['restore_ratio']:.2f}x (goal <= 1.3x), {figures['restore_mib_per_s']} MiB/s")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        stop_engine(engine)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
