#!/usr/bin/env bash
# Installs the Debian packages mini-iaas needs, only those missing (idempotent). Run as root.
set -euo pipefail

# What a minimal Debian 12 (debootstrap --variant=minbase) lacks for `make up`; `make check-install`
# proves the `make deps venv` part of that in such a chroot.
packages=(
    postgresql redis-server                      # the database and the broker
    libvirt-daemon-system libvirt-clients        # libvirtd, virtlogd, virsh
    qemu-system-x86 qemu-utils                   # the hypervisor and qemu-img
    python3 python3-venv python3-dev gcc         # the venv, and a compiler for the packages PyPI has only as source:
    libvirt-dev pkg-config                       #   libvirt-python
    libpq-dev                                    #   psycopg2 (pg_config and its headers)
    ca-certificates                              # pip's HTTPS downloads
    procps                                       # pgrep in start-services.sh
    file                                         # build-tiny-image.sh's check that busybox is static
    curl                                         # stack.sh's readiness check and the README walk-through
    acl                                          # stack.sh: let the service user pass a closed folder above the checkout
    openssh-client                               # ssh-keygen: the tests hold keypair fingerprints against it
    docker-compose                               # the tests validate docker-compose.yml with Debian's Compose (1.29)
    systemd logrotate                            # the tests check deploy/ with systemd-analyze verify and logrotate -d
)

installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]; }

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    echo "==> Debian packages: all present"
    exit 0
fi
if ((EUID != 0)); then
    echo "missing Debian packages: ${missing[*]}; run 'make up' as root (or apt-get install them)" >&2
    exit 1
fi
echo "==> installing ${missing[*]} (a few minutes on a fresh machine)"
apt-get update -q
# Services must not auto-start through policy-rc.d-less containers; start-services.sh starts them.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
