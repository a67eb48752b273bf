#!/usr/bin/env bash
# Starts what mini-iaas runs on: PostgreSQL, Redis, virtlogd and libvirtd -- each only if it is down.
# There is no systemd here, so each daemon is started directly and then polled until it answers.
set -euo pipefail

wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND until it succeeds or time runs out
    local what=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "$what did not come up; see its log (docs/operations.md: Troubleshooting)" >&2
            return 1
        fi
        sleep 0.2
    done
}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "==> starting PostgreSQL"
    cluster=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
fi
wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "==> starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
        --dir /var/lib/redis --logfile /var/log/redis/mini-iaas.log
fi
wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping

# Without udev nobody applies Debian's rule for /dev/kvm (root:kvm 0660). libvirtd then decides on
# every call that KVM "is not available now" and re-probes qemu: ~40 s per domain definition.
if [[ -c /dev/kvm ]] && [[ $(stat -c %G /dev/kvm) != kvm ]] && getent group kvm >/dev/null; then
    echo "==> /dev/kvm: applying the udev rule by hand (root:kvm 0660)"
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi

if ! pgrep -x virtlogd >/dev/null; then
    echo "==> starting virtlogd"
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    echo "==> starting libvirtd"
    libvirtd -d
fi
wait_for libvirtd 30 virsh -c qemu:///system version
echo "==> PostgreSQL, Redis, virtlogd and libvirtd are up"
