#!/usr/bin/env python3
"""Measurements for the backup handbook, not a test: backup and restore against the bare commands on
about 1 GiB, what a running ClickHouse answers meanwhile, and the archive format against `age`.

    .venv/bin/python scripts/measure-backup.py [--gib 1.0] [--only engine|formats] [--json FILE]

engine (a private Docker Engine with the e2e test images, as scripts/bench_backup.py starts it):
  data: PostgreSQL rows of random text and ClickHouse parts of random TSV (bench_backup.fill);
  backup:  `invoke backup` (encrypted) vs `pg_dump > file` plus a tar of the ClickHouse volume;
           during `invoke backup` a loop inside the clickhouse container runs SELECT count() every
           100 ms: answered and failed queries, the longest gap, the ZooKeeper pause;
  restore: `invoke restore --yes` vs down --volumes, up db, pg_restore, tar -x, up --wait.
formats (no engine; a file of --gib GiB of random bytes, which is what compressed dumps and
ClickHouse's LZ4 parts look like): the kit's archive format 4 (archive.writer: a tar in the kit's own
age writer, scrypt 2^18, 32 MiB parts; read back by the kit's reader, which checks every sha256, and
by `age -d | tar -t`, the stock tools), the kit's older format 3 (ArchiveWriter in EncryptingWriter:
sha256 and AES-256-GCM chunks) against a tar inside `age` (the Debian tool; X25519 recipient, since `age -p`
reads its passphrase only from a terminal: the payload cipher is the same ChaCha20-Poly1305 STREAM
whatever the recipient) and `pyrage`'s passphrase API when it is importable (scrypt recipient):
seconds, MiB/s and peak memory (the child process's maximum RSS) to write and to read back, and
whether a flipped byte and a truncated file are refused (and whether plaintext came out first).
Everything it makes lives in one temporary folder, removed at the end (also on failure)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSPHRASE = "measurement passphrase, not a secret"
MIB = 1024 ** 2


def log(message: str) -> None:
    print(f"measure: {message}", file=sys.stderr, flush=True)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_backup", REPO / "scripts" / "bench_backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(function) -> float:
    started = time.monotonic()
    function()
    return time.monotonic() - started


# ----------------------------------------------------------------------------- engine
QUERY_LOOP = """
while [ ! -e /tmp/measure-stop ]; do
    at=$(date +%s.%N)
    if clickhouse-client --query "SELECT count() FROM default.bench_events" >/dev/null 2>&1; then echo "$at ok"
    else echo "$at fail"; fi
    sleep 0.1
done
"""


def measure_engine(gib: float, work: Path) -> dict:
    from posthog_compose.configuration import compose
    from tests.e2e.harness import make_deployment, start_engine, stop_engine

    engine = start_engine()
    engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"] = PASSPHRASE
    deployment = make_deployment(work / "deployment", engine)
    values = deployment.values()
    figures: dict = {}
    try:
        if deployment.invoke("up", "--timeout", "600").returncode != 0:
            raise SystemExit("invoke up failed")
        bench = _bench()
        bench.fill(deployment, gib)
        sizes = bench.dataset_sizes(engine, values)
        figures["dataset_bytes"] = sizes
        log(f"dataset: {sum(sizes.values()) / MIB:,.0f} MiB on disk")
        bare = work / "bare"
        bare.mkdir()

        def bare_backup():
            bench.bare_backup(deployment, engine, values, bare)

        made: dict = {}

        def kit_backup():
            deployment.compose("exec", "-T", "clickhouse", "rm", "-f", "/tmp/measure-stop")
            loop = subprocess.Popen(compose.command(deployment.root, "exec", "-T", "clickhouse", "sh", "-c", QUERY_LOOP),
                                    cwd=deployment.root, env=engine.env, stdout=subprocess.PIPE, text=True)
            time.sleep(1)
            began = time.time()
            result = deployment.invoke("backup", "--json")
            ended = time.time()
            deployment.compose("exec", "-T", "clickhouse", "touch", "/tmp/measure-stop", check=False)
            lines = loop.communicate(timeout=120)[0].splitlines()
            if result.returncode != 0:
                raise SystemExit(f"invoke backup failed: {result.stderr[-500:]}")
            made.update(json.loads(result.stdout))
            during = [line.split() for line in lines if began <= float(line.split()[0]) <= ended]
            answered = sorted(float(at) for at, outcome in during if outcome == "ok")
            gaps = [b - a for a, b in zip([began, *answered], [*answered, ended])]
            figures["queries"] = {"answered": len(answered), "failed": sum(o == "fail" for _, o in during),
                                  "longest_gap_s": round(max(gaps), 2)}

        def bare_restore():
            bench.bare_restore(deployment, engine, values, bare)

        def kit_restore():
            if deployment.invoke("restore", made["archive"], "--yes").returncode != 0:
                raise SystemExit("invoke restore failed")

        for name, function in (("bare_backup", bare_backup), ("backup", kit_backup),
                               ("bare_restore", bare_restore), ("restore", kit_restore)):
            figures[name] = round(timed(function), 1)
            log(f"{name}: {figures[name]} s")
        figures["archive_bytes"] = made["size"]
        figures["clickhouse_pause_s"] = made["clickhouse_pause_seconds"]
        figures["paused_s"] = made.get("paused_seconds")
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        stop_engine(engine)
    return figures


# ----------------------------------------------------------------------------- formats
def _child(argv: list[str], *, stdin=None, stdout=None) -> tuple[float, int, int]:
    """Run ``argv``; seconds, exit code and its peak memory (KiB): VmHWM of /proc/PID/status, read every
    20 ms until it exits (wait4's maximum RSS would count this script's own memory, copied at fork)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return time.monotonic() - started, process.returncode, peak


def _age_passphrase(argv: list[str], passphrase: str) -> tuple[float, int, int]:
    """``age -p`` / ``age -d`` with a passphrase recipient: age reads the passphrase only from a terminal,
    so it runs on a pseudo-terminal that answers each prompt. Seconds, exit code, peak memory (KiB)."""
    import pty
    import select

    started = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    peak, seen = 0, b""
    while True:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        ready, _, _ = select.select([fd], [], [], 0.02)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if seen.lower().rstrip().endswith(b":"):  # "Enter passphrase ...:" or "Confirm passphrase:"
                os.write(fd, passphrase.encode() + b"\n")
                seen = b""
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return time.monotonic() - started, os.waitstatus_to_exitcode(status), peak


KIT_WRITE_4 = """
import sys
sys.path.insert(0, {repo!r})
from posthog_compose.operations import archive
with open(sys.argv[1], "rb") as source, open(sys.argv[2], "wb") as out:
    writer, sink = archive.writer(out, {passphrase!r})
    writer.add_stream("volumes/clickhouse.tar", source, 0o600)
    writer.close({{}})
    sink.finish()
"""
KIT_WRITE = """
import sys
sys.path.insert(0, {repo!r})
from posthog_compose.operations import archive
with open(sys.argv[1], "rb") as source, open(sys.argv[2], "wb") as out:
    sink = archive.EncryptingWriter(out, {passphrase!r})
    writer = archive.ArchiveWriter(sink)
    writer.add_stream("volumes/clickhouse.tar", source, 0o600)
    writer.close({{"format": 1}})
    sink.finish()
"""
KIT_READ = """
import sys
sys.path.insert(0, {repo!r})
from posthog_compose.operations import archive
result = archive.ReadResult({{}})
with open(sys.argv[1], "rb") as handle:
    try:
        for member in archive.iter_members(archive.open_stream(handle, {passphrase!r}), result):
            while member.stream.read(1 << 20):
                pass
    except archive.ArchiveError as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
"""
PYRAGE = """
import sys
from pyrage import passphrase
data = open(sys.argv[2], "rb").read()
try:
    out = (passphrase.encrypt if sys.argv[1] == "encrypt" else passphrase.decrypt)(data, {passphrase!r})
except Exception as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
if sys.argv[1] == "encrypt":
    open(sys.argv[3], "wb").write(out)
"""


def _damaged(path: Path, target: Path, how: str) -> Path:
    shutil.copyfile(path, target)
    with open(target, "r+b") as handle:
        size = target.stat().st_size
        if how == "flip":
            handle.seek(size // 2)
            byte = handle.read(1)
            handle.seek(size // 2)
            handle.write(bytes([byte[0] ^ 0x01]))
        else:
            handle.truncate(size - 70_000)  # inside the last chunks of either format
    return target


def measure_formats(gib: float, work: Path, python: str, pyrage_python: str) -> dict:
    size = int(gib * 1024 ** 3)
    data = work / "payload.bin"
    with open(data, "wb") as handle:
        for _ in range(size // (64 * MIB)):
            handle.write(os.urandom(64 * MIB))
    log(f"payload: {size / MIB:,.0f} MiB of random bytes")
    figures: dict = {"payload_mib": size // MIB}
    passphrase = PASSPHRASE.encode()
    kit_write = KIT_WRITE.format(repo=str(REPO), passphrase=passphrase)
    kit_read = KIT_READ.format(repo=str(REPO), passphrase=passphrase)

    def row(name: str, write: tuple, read: tuple, refused: dict) -> None:
        figures[name] = {"write_s": round(write[0], 1), "write_mib_s": round(size / MIB / write[0], 1),
                         "write_peak_mib": round(write[2] / 1024, 1), "read_s": round(read[0], 1),
                         "read_mib_s": round(size / MIB / read[0], 1), "read_peak_mib": round(read[2] / 1024, 1),
                         **refused}
        log(f"{name}: {figures[name]}")

    # The kit's format 4: a tar inside age.
    kit4 = work / "kit4.backup"
    write = _child([python, "-c", KIT_WRITE_4.format(repo=str(REPO), passphrase=passphrase), str(data), str(kit4)])
    read = _child([python, "-c", kit_read, str(kit4)], stdout=subprocess.DEVNULL)
    refused = {}
    for how in ("flip", "truncate"):
        damaged = _damaged(kit4, work / f"kit4-{how}.backup", how)
        refused[f"{how}_refused"] = _child([python, "-c", kit_read, str(damaged)], stdout=subprocess.DEVNULL)[1] != 0
        damaged.unlink()
    row("kit format 4 (tar in age, scrypt 2^18; the kit's reader)", write, read, refused)
    if shutil.which("age"):  # the same archive read by the stock tools: age -d, then tar lists it
        listing = work / "kit4.tar"
        read = _age_passphrase([shutil.which("age"), "-d", "-o", str(listing), str(kit4)], PASSPHRASE)
        tar_seconds = timed(lambda: subprocess.run(["tar", "-tf", str(listing)], check=True, capture_output=True))
        figures["kit format 4 read by age -d, then tar -t"] = {
            "read_s": round(read[0] + tar_seconds, 1), "read_mib_s": round(size / MIB / (read[0] + tar_seconds), 1),
            "read_peak_mib": round(read[2] / 1024, 1), "exit": read[1]}
        log(f"age -d + tar -t of format 4: {figures['kit format 4 read by age -d, then tar -t']}")
        listing.unlink(missing_ok=True)
    kit4.unlink()

    # The kit's older format 3.
    kit = work / "kit.backup"
    write = _child([python, "-c", kit_write, str(data), str(kit)])
    read = _child([python, "-c", kit_read, str(kit)], stdout=subprocess.DEVNULL)
    refused = {}
    for how in ("flip", "truncate"):
        damaged = _damaged(kit, work / f"kit-{how}.backup", how)
        # The restore reads everything before it changes anything: no plaintext is used before the check.
        refused[f"{how}_refused"] = _child([python, "-c", kit_read, str(damaged)], stdout=subprocess.DEVNULL)[1] != 0
        damaged.unlink()
    row("kit format 3 (AES-256-GCM, sha256)", write, read, refused)
    kit.unlink()

    age = shutil.which("age")
    if age and shutil.which("age-keygen"):
        key = work / "age.key"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
        tarred = work / "payload.tar"
        subprocess.run(["tar", "-C", str(work), "-cf", str(tarred), data.name], check=True)
        encrypted = work / "payload.tar.age"
        tar_seconds = timed(lambda: subprocess.run(["tar", "-C", str(work), "-cf", os.devnull, data.name], check=True))
        write = _child([age, "-r", recipient, "-o", str(encrypted), str(tarred)])
        write = (write[0] + tar_seconds, write[1], write[2])
        read = _child([age, "-d", "-i", str(key), str(encrypted)], stdout=subprocess.DEVNULL)
        refused = {}
        for how in ("flip", "truncate"):
            damaged = _damaged(encrypted, work / f"age-{how}.age", how)
            out = work / "age-out"
            with open(out, "wb") as handle:
                code = _child([age, "-d", "-i", str(key), str(damaged)], stdout=handle)[1]
            refused[f"{how}_refused"] = code != 0
            refused[f"{how}_plaintext_before_refusal_mib"] = round(out.stat().st_size / MIB)
            out.unlink()
            damaged.unlink()
        row("tar + age CLI (ChaCha20-Poly1305, X25519)", write, read, refused)
        # The same with a passphrase recipient (scrypt, work factor 2^18 in age): what an archive would use.
        encrypted.unlink()
        write = _age_passphrase([age, "-p", "-o", str(encrypted), str(tarred)], PASSPHRASE)
        write = (write[0] + tar_seconds, write[1], write[2])
        read = _age_passphrase([age, "-d", "-o", os.devnull, str(encrypted)], PASSPHRASE)
        refused = {}
        for how in ("flip", "truncate"):
            damaged = _damaged(encrypted, work / f"age-{how}.age", how)
            out = work / "age-out"
            refused[f"{how}_refused"] = _age_passphrase([age, "-d", "-o", str(out), str(damaged)], PASSPHRASE)[1] != 0
            refused[f"{how}_plaintext_before_refusal_mib"] = round(out.stat().st_size / MIB) if out.exists() else 0
            out.unlink(missing_ok=True)
            damaged.unlink()
        if write[1] == 0 and read[1] == 0:
            row("tar + age CLI -p (passphrase, scrypt)", write, read, refused)
        else:
            log(f"age -p did not run through its pseudo-terminal (exit {write[1]}, {read[1]}): its row is left out")
        for path in (tarred, encrypted):
            path.unlink(missing_ok=True)

    python = pyrage_python
    try:
        subprocess.run([python, "-c", "import pyrage"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        log("pyrage is not importable by --pyrage-python: its row is left out")
        return figures
    script = PYRAGE.format(passphrase=PASSPHRASE)
    encrypted = work / "pyrage.age"
    write = _child([python, "-c", script, "encrypt", str(data), str(encrypted)])
    read = _child([python, "-c", script, "decrypt", str(encrypted)])
    refused = {}
    for how in ("flip", "truncate"):
        damaged = _damaged(encrypted, work / f"pyrage-{how}.age", how)
        refused[f"{how}_refused"] = _child([python, "-c", script, "decrypt", str(damaged)])[1] != 0
        damaged.unlink()
    row("pyrage passphrase (scrypt, in memory)", write, read, refused)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--only", choices=("engine", "formats"))
    parser.add_argument("--pyrage-python", default=sys.executable,
                        help="a Python that can import pyrage, for its row (the kit's own need not have it)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="measure-backup-"))
    figures: dict = {}
    try:
        if args.only in (None, "formats"):
            figures["formats"] = measure_formats(args.gib, work, sys.executable, args.pyrage_python)
        if args.only in (None, "engine"):
            figures["engine"] = measure_engine(args.gib, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "engine" in figures:
        e = figures["engine"]
        data = sum(e["dataset_bytes"].values()) / MIB
        print(f"\nData: {data:,.0f} MiB on disk; archive {e['archive_bytes'] / MIB:,.0f} MiB\n")
        print("| | the kit | bare commands | ratio | kit throughput |\n| --- | --- | --- | --- | --- |")
        for name in ("backup", "restore"):
            print(f"| {name} | {e[name]} s | {e['bare_' + name]} s | {e[name] / e['bare_' + name]:.2f}x | "
                  f"{data / e[name]:.1f} MiB/s |")
        q = e["queries"]
        print(f"\nClickHouse pause {e['clickhouse_pause_s']} s, stopped for the copy: {e['paused_s']}; queries during "
              f"the backup: {q['answered']} answered, {q['failed']} failed, longest gap {q['longest_gap_s']} s")
    if "formats" in figures:
        print(f"\nFormats, {figures['formats']['payload_mib']} MiB:\n")
        print("| format | write | write peak | read | read peak | flipped byte | truncated |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, row in figures["formats"].items():
            if not isinstance(row, dict) or "write_mib_s" not in row:
                continue
            def verdict(how):
                leaked = row.get(f"{how}_plaintext_before_refusal_mib")
                return ("refused" if row[f"{how}_refused"] else "ACCEPTED") + (
                    f" ({leaked} MiB out first)" if leaked else "")
            print(f"| {name} | {row['write_mib_s']} MiB/s | {row['write_peak_mib']} MiB | {row['read_mib_s']} MiB/s | "
                  f"{row['read_peak_mib']} MiB | {verdict('flip')} | {verdict('truncate')} |")
        for name, row in figures["formats"].items():
            if isinstance(row, dict) and "write_mib_s" not in row:
                print(f"\n{name}: {row['read_mib_s']} MiB/s, peak {row['read_peak_mib']} MiB (exit {row['exit']})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
