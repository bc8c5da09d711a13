"""Operations: everything that acts on a deployment -- Compose and engine calls, the lifecycle (up,
status, down), readiness, upgrades, hardening and rotation, backup and restore, the edge proxy,
the datastore migration, doctor, disk usage, and the journal that lets an interrupted task finish."""
