"""ALTER TABLE ... FREEZE / UNFREEZE WITH NAME, and the list of MergeTree tables a backup freezes
(ClickHouse STAND-IN, test only): what `invoke backup` asks of a running ClickHouse.

What it models of ClickHouse 22.8:
- `ALTER TABLE db.t FREEZE WITH NAME 'n'` makes hard links of the files of every active part under
  shadow/<n>/<the table's data path>/<part>/: "The same structure of directories is created inside the
  backup as inside /var/lib/clickhouse/. The query performs chmod for all files, forbidding writing
  into them." It copies only the data, not the table's metadata, and is not replicated (a local
  snapshot; no ZooKeeper request unless zero-copy replication is on, which the kit never enables).
  (ClickHouse docs, docs/en/sql-reference/statements/alter/partition.md, "FREEZE PARTITION";
  src/Storages/StorageReplicatedMergeTree.h, createAndStoreFreezeMetadata: "Required only if
  zero-copy replication enabled".) The folder is named with escapeForFileName(n): every character
  but [A-Za-z0-9_] becomes %XX (src/Storages/Freeze.cpp, Unfreezer: `backup_directory_prefix /
  escapeForFileName(backup_name)`). shadow/increment.txt counts the freezes.
- Only the MergeTree family has parts: FREEZE of any other engine (a Kafka table, a materialized
  view) is refused with Code 48 NOT_IMPLEMENTED, "Partition operations are not supported by storage"
  (IStorage::alterPartition). Their definitions in metadata/ are all a restore needs.
- `ALTER TABLE db.t UNFREEZE WITH NAME 'n'` removes that table's frozen parts from shadow/<n>/ (the
  docs' "UNFREEZE PARTITION": "Removes freezed partitions with the specified name from the disk");
  the folders above the parts stay, as ClickHouse leaves them.
- system.tables answers database and name of the MergeTree-family tables, for the one query the
  backup sends (capture.MERGETREE_TABLES).
Not modelled: PARTITION clauses, FREEZE without a name (shadow/<N>/), several disks, zero-copy
metadata (frozen_metadata.txt), the verbose result (alter_partition_verbose_result), SYSTEM UNFREEZE.
The stand-in keeps an Ordinary database's layout, so a table's data path is data/<db>/<table>/; the
real 22.8 server's Atomic databases put it at store/<abc>/<uuid>/, which the kit's copy handles alike.
"""
import os
import re
import shutil

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
ALTER = re.compile(rf"ALTER TABLE `?({NAME})`?\.`?({NAME})`? (UN)?FREEZE WITH NAME '([^'\\]*)'", re.I)
TABLES = re.compile(r"SELECT database, name FROM system\.tables WHERE engine LIKE '%MergeTree' AND database NOT IN "
                    r"\('system', 'INFORMATION_SCHEMA', 'information_schema'\) ORDER BY database, name FORMAT TSV",
                    re.I)
ENGINE = re.compile(r"\)\s*ENGINE\s*=\s*(\w+)", re.I)


def escape_for_file_name(name):
    """ClickHouse's escapeForFileName: [A-Za-z0-9_] as they are, every other byte as %XX."""
    return "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) == "_") else f"%{b:02X}"
                   for b in name.encode())


def engine_of(definition):
    """The engine of a stored definition: 'MaterializedView' for a view, else the word after ENGINE =."""
    if definition.lstrip().upper().startswith("CREATE MATERIALIZED VIEW"):
        return "MaterializedView"
    found = ENGINE.search(definition)
    return found.group(1) if found else "?"


def mergetree_tables(data):
    """(database, table) of every MergeTree-family table, ordered as the backup's query asks."""
    found = []
    for database in sorted(os.listdir(f"{data}/metadata")):
        folder = f"{data}/metadata/{database}"
        if not os.path.isdir(folder) or database in ("system", "INFORMATION_SCHEMA", "information_schema"):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".sql"):
                with open(f"{folder}/{name}") as handle:
                    if engine_of(handle.read()).endswith("MergeTree"):
                        found.append((database, name[:-4]))
    return found


def freeze(data, database, table, backup_name, part_names, engine):
    """Hard links of every file of each active part under shadow/<name>/data/<db>/<table>/<part>/."""
    if not engine.endswith("MergeTree"):
        raise NotImplementedError(f"Partition operations are not supported by storage {engine}")
    shadow = f"{data}/shadow"
    os.makedirs(shadow, exist_ok=True)
    try:
        count = int(open(f"{shadow}/increment.txt").read().strip() or 0)
    except (OSError, ValueError):
        count = 0
    with open(f"{shadow}/increment.txt", "w") as handle:
        handle.write(f"{count + 1}\n")
    relative = f"data/{database}/{table}"
    for part in part_names:
        source, target = f"{data}/{relative}/{part}", f"{shadow}/{escape_for_file_name(backup_name)}/{relative}/{part}"
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(source):
            os.link(f"{source}/{name}", f"{target}/{name}")
            os.chmod(f"{target}/{name}", 0o444)  # "forbidding writing into them" (the live part's file too: one inode)


def unfreeze(data, database, table, backup_name):
    """Remove the table's frozen parts of ``backup_name``; the folders above them stay."""
    folder = f"{data}/shadow/{escape_for_file_name(backup_name)}/data/{database}/{table}"
    if os.path.isdir(folder):
        for part in os.listdir(folder):
            shutil.rmtree(f"{folder}/{part}")
