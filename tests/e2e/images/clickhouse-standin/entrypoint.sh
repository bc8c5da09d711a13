#!/bin/sh
# /entrypoint.sh of the ClickHouse STAND-IN (test only): the real image's entrypoint starts the server.
exec /usr/local/bin/clickhouse-standin "$@"
