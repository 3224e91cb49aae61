#!/usr/bin/env bash
# Start a local PostgreSQL for concierge and print its SQLAlchemy URL (idempotent; run as root).
#
#   eval "export CONCIERGE_DATABASE_URL=$(scripts/start_postgres.sh)"
#   .venv/bin/python -m pytest tests/store/test_tenancy.py -q
#
# Installs the Debian `postgresql` package if missing, starts the first cluster with pg_ctlcluster
# (creating one if none exists), and creates the role and database `concierge` (password
# `concierge`, or $CONCIERGE_PG_PASSWORD). The Python driver is psycopg 3: pip install 'psycopg[binary]'.
set -euo pipefail

ROLE="${CONCIERGE_PG_ROLE:-concierge}"
DB="${CONCIERGE_PG_DB:-concierge}"
PASSWORD="${CONCIERGE_PG_PASSWORD:-concierge}"
log() { echo "start_postgres: $*" >&2; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing postgresql (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

# The first cluster listed (version, name, port); create one when the package made none.
read -r VERSION CLUSTER PORT _ < <(pg_lsclusters --no-header 2>/dev/null | head -n 1) || true
if [ -z "${VERSION:-}" ]; then
    VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    CLUSTER=main
    log "creating cluster $VERSION/$CLUSTER"
    pg_createcluster "$VERSION" "$CLUSTER" >&2
    read -r VERSION CLUSTER PORT _ < <(pg_lsclusters --no-header | head -n 1)
fi

if ! pg_lsclusters --no-header | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
    log "starting cluster $VERSION/$CLUSTER on port $PORT"
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

psql_admin() { su postgres -c "psql -p $PORT -v ON_ERROR_STOP=1 -qAt $*"; }
for _ in $(seq 1 30); do
    psql_admin "-c 'SELECT 1'" >/dev/null 2>&1 && break
    sleep 0.5
done

if [ "$(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'\"")" != "1" ]; then
    log "creating role $ROLE"
    psql_admin "-c \"CREATE ROLE \\\"$ROLE\\\" LOGIN PASSWORD '$PASSWORD'\"" >&2
fi
if [ "$(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname = '$DB'\"")" != "1" ]; then
    log "creating database $DB"
    psql_admin "-c \"CREATE DATABASE \\\"$DB\\\" OWNER \\\"$ROLE\\\"\"" >&2
fi

echo "postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
