#!/usr/bin/env bash
# Creates the PostgreSQL role and database named in IAAS_DATABASE_URL when they do not exist yet.
# As root on the database machine it works through the local socket as the `postgres` superuser
# (peer authentication), so it does not depend on how pg_hba.conf treats TCP connections; the
# services then log in over TCP with the role's password, which both `trust` and Debian's default
# `scram-sha-256` accept.
set -euo pipefail
url=${IAAS_DATABASE_URL:-postgresql+psycopg2://iaas:iaas@127.0.0.1:5432/iaas}

# user, password, host, database -- parsed by Python's URL parser, not by hand
read -r user password host database < <(python3 - "$url" <<'PY'
import sys
from urllib.parse import unquote, urlsplit
u = urlsplit(sys.argv[1])
print(unquote(u.username or "postgres"), unquote(u.password or ""), u.hostname or "localhost", u.path.lstrip("/"))
PY
)

case $host in
127.0.0.1 | localhost | ::1) ;;
*)
    echo "==> database on $host: create role $user and database $database there yourself"
    exit 0
    ;;
esac
if ((EUID != 0)); then
    echo "==> not root: assuming role $user and database $database exist"
    exit 0
fi

as_postgres() { (cd / && runuser -u postgres -- "$@"); }
sql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

if [[ $(sql -v name="$user" <<<"SELECT 1 FROM pg_roles WHERE rolname = :'name'") != 1 ]]; then
    echo "==> creating database role $user"
    sql -v name="$user" -v pw="$password" <<<"CREATE ROLE :\"name\" LOGIN CREATEDB PASSWORD :'pw'"
fi
if [[ $(sql -v name="$database" <<<"SELECT 1 FROM pg_database WHERE datname = :'name'") != 1 ]]; then
    echo "==> creating database $database (owner $user)"
    as_postgres createdb --owner="$user" -- "$database"
fi
