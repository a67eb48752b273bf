#!/usr/bin/env bash
# Creates, once, the system user that the API, beat and Flower run as (IAAS_SERVICE_USER, default
# mini-iaas): no password, no login shell, no home. docs/operations.md says which process runs as whom.
set -euo pipefail
user=${IAAS_SERVICE_USER:-mini-iaas}

if ((EUID != 0)); then
    echo "==> not root: every process runs as $(id -un)"
    exit 0
fi
if ! id -u "$user" >/dev/null 2>&1; then
    echo "==> creating the system user $user (no login, no home)"
    # useradd (package passwd) is in every Debian, adduser not in a minimal one.
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi
