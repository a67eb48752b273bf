#!/usr/bin/env bash
# Generates, once, the passwords `make up` needs, into IAAS_SECRETS_DIR (the Makefile's
# $(RUN_DIR)/secrets): `postgres` (the database role's), `redis` (requirepass) and `flower` (its basic
# auth, one line `user:password`). The folder is 0700 and its files 0600, owned by the service user
# (IAAS_SERVICE_USER) so that the processes running as that user can read them; root reads them anyway.
# An existing secret is kept; to rotate one, see docs/operations.md.
#
# --compose: the secrets of docker-compose.yml (`make compose-secrets`: .run/compose-secrets). Compose
# bind-mounts each file into the containers that name it, keeping its owner and mode, and the
# containers' users (postgres, redis, mini-iaas, root) differ: there the files are 0644, readable in
# the containers that mount them, and the folder stays 0700, closed to the host's other users.
set -euo pipefail
compose=0
[[ ${1:-} == --compose ]] && compose=1
dir=${IAAS_SECRETS_DIR:?IAAS_SECRETS_DIR must be set (the Makefile sets it)}
user=${IAAS_SERVICE_USER:-mini-iaas}

# The run folder above the secrets is made (or kept) traversable, before the umask below would make
# it 0700: the processes running as the service user reach their secrets (and beat its schedule) through it.
parent=$(dirname "$dir")
mkdir -p "$parent"
chmod o+x "$parent"

umask 077
mkdir -p "$dir"

# 32 random bytes from the operating system's generator, URL-safe (no quoting needed anywhere).
generate() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

keep_or_make() {  # keep_or_make NAME [PREFIX]: write PREFIX + a new password to NAME unless it exists
    local path=$dir/$1
    [[ -s $path ]] && return
    printf '%s%s\n' "${2:-}" "$(generate)" >"$path.tmp"
    mv "$path.tmp" "$path"
    echo "==> generated $path"
}
keep_or_make postgres
keep_or_make redis
keep_or_make flower admin:

chmod 0700 "$dir"
if ((compose)); then
    chmod 0644 "$dir/postgres" "$dir/redis" "$dir/flower"
    exit 0
fi
find "$dir" -maxdepth 1 -type f -exec chmod 0600 {} +
# The service user owns the folder and the three passwords its processes read -- and nothing else:
# the admin token (`make access`) stays root's, so a compromised API cannot take an admin's rights.
if ((EUID == 0)) && id -u "$user" >/dev/null 2>&1; then
    chown "$user:$user" "$dir" "$dir/postgres" "$dir/redis" "$dir/flower"
    if [[ -e $dir/admin-token ]]; then chown root:root "$dir/admin-token"; fi
fi
