#!/usr/bin/env bash
# Creates the PostgreSQL role and database named in IAAS_DATABASE_URL when they do not exist yet, and
# sets the role's password on every run: the one in the URL, else the generated one in
# IAAS_SECRETS_DIR/postgres (scripts/ensure-secrets.sh). As root on the database machine it works
# through the local socket as the `postgres` superuser (peer authentication), so it does not depend on
# how pg_hba.conf treats TCP connections; the services then log in over TCP with that password, as
# Debian's default `scram-sha-256` for 127.0.0.1 demands. No password is ever put on a command line.
set -euo pipefail
export IAAS_DATABASE_URL=${IAAS_DATABASE_URL:-postgresql+psycopg2://iaas@127.0.0.1:5432/iaas}
secrets_dir=${IAAS_SECRETS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.run/secrets}

# user, host, port, database -- parsed by Python's URL parser, not by hand (the URL, which may carry a
# password, goes through the environment, not argv)
read -r user host port database < <(python3 <<'PY'
import os
from urllib.parse import unquote, urlsplit
u = urlsplit(os.environ["IAAS_DATABASE_URL"])
print(unquote(u.username or "postgres"), u.hostname or "localhost", u.port or 5432, u.path.lstrip("/"))
PY
)
# The password: the URL's own, else the secret. Exported only to psql below, which reads it with \getenv.
IAAS_ROLE_PASSWORD=$(python3 <<'PY'
import os
from urllib.parse import unquote, urlsplit
print(unquote(urlsplit(os.environ["IAAS_DATABASE_URL"]).password or ""))
PY
)
if [[ -z $IAAS_ROLE_PASSWORD && -s $secrets_dir/postgres ]]; then
    IAAS_ROLE_PASSWORD=$(head -n 1 "$secrets_dir/postgres")
fi

case $host in
127.0.0.1 | localhost | ::1) ;;
*)
    echo "==> database on $host: create role $user (with its password) and database $database there yourself"
    exit 0
    ;;
esac
if ((EUID != 0)); then
    echo "==> not root: assuming role $user and database $database exist, with the password in use"
    exit 0
fi
if [[ -z $IAAS_ROLE_PASSWORD ]]; then
    echo "no password for role $user: neither in IAAS_DATABASE_URL nor in $secrets_dir/postgres" \
        "(scripts/ensure-secrets.sh makes it; 'make up' runs it)" >&2
    exit 1
fi

as_postgres() { (cd / && runuser -u postgres -- "$@"); }
sql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -tA "$@"; }

if [[ $(sql -v name="$user" <<<"SELECT 1 FROM pg_roles WHERE rolname = :'name'") == 1 ]]; then
    verb=ALTER
else
    echo "==> creating database role $user"
    verb=CREATE
fi
# ALTER on every run: the role's password is always the current secret (rotation: docs/operations.md).
# PostgreSQL gets a SCRAM-SHA-256 verifier made here, never the password itself, so not even a failed
# statement that the server logs can show it; psql reads it from the environment (\getenv), not argv.
IAAS_ROLE_VERIFIER=$(IAAS_ROLE_PASSWORD=$IAAS_ROLE_PASSWORD python3 <<'PY'
import base64, hashlib, hmac, os, secrets
# RFC 5802/7677 as PostgreSQL stores it (SASLprep leaves the ASCII of generated passwords as it is).
password, salt, rounds = os.environ["IAAS_ROLE_PASSWORD"].encode(), secrets.token_bytes(16), 4096
if not password.isascii():
    raise SystemExit("ensure-database.sh: give the role an ASCII password (SASLprep is not done here)")
salted = hashlib.pbkdf2_hmac("sha256", password, salt, rounds)
stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
server = hmac.digest(salted, b"Server Key", "sha256")
b64 = lambda raw: base64.b64encode(raw).decode()
print(f"SCRAM-SHA-256${rounds}:{b64(salt)}${b64(stored)}:{b64(server)}")
PY
)
IAAS_ROLE_VERIFIER=$IAAS_ROLE_VERIFIER sql -v name="$user" <<SQL
\getenv verifier IAAS_ROLE_VERIFIER
$verb ROLE :"name" LOGIN CREATEDB PASSWORD :'verifier'
SQL
if [[ $(sql -v name="$database" <<<"SELECT 1 FROM pg_database WHERE datname = :'name'") != 1 ]]; then
    echo "==> creating database $database (owner $user)"
    as_postgres createdb -p "$port" --owner="$user" -- "$database"
fi

# The password only protects anything where pg_hba.conf asks for it.
trusting=$(sql <<<"SELECT count(*) FROM pg_hba_file_rules WHERE type LIKE 'host%' AND auth_method = 'trust'")
if ((trusting > 0)); then
    echo "==> note: pg_hba.conf trusts some TCP connections ('trust'): there PostgreSQL accepts any" \
        "password for $user; Debian's default is scram-sha-256 (docs/operations.md: Secrets)"
fi
