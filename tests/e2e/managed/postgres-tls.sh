#!/bin/sh
# Entrypoint of the "managed" PostgreSQL: PostgreSQL only uses a private key that the postgres user
# owns with mode 0600, so the mounted certificate and key are copied there first; then the image's
# own entrypoint runs (initialisation on first start, then `postgres` with the arguments given).
set -eu
mkdir -p /var/lib/postgresql/tls
cp /managed/certs/postgres.crt /var/lib/postgresql/tls/server.crt
cp /managed/certs/postgres.key /var/lib/postgresql/tls/server.key
chown -R postgres:postgres /var/lib/postgresql/tls
chmod 600 /var/lib/postgresql/tls/server.key
exec /usr/local/bin/docker-entrypoint.sh "$@"
