#!/usr/bin/env bash
# Starts what mini-iaas runs on: PostgreSQL, Redis, virtlogd and libvirtd -- each only if it is down.
# There is no systemd here, so each daemon is started directly and then polled until it answers.
set -euo pipefail
cd "$(dirname "$0")/.."   # the checkout: .run/ is found from there

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

# Redis, on the host and port of IAAS_BROKER_URL, with the password of the URL or, without one, of
# IAAS_SECRETS_DIR/redis. The password never goes on a command line: redis-server reads it from a 0600
# config file, redis-cli from REDISCLI_AUTH or from its standard input.
export IAAS_BROKER_URL=${IAAS_BROKER_URL:-redis://127.0.0.1:6379/0}
secrets_dir=${IAAS_SECRETS_DIR:-$PWD/.run/secrets}
read -r redis_host redis_port < <(python3 <<'PY'
import os
from urllib.parse import urlsplit
u = urlsplit(os.environ["IAAS_BROKER_URL"])
print(u.hostname or "127.0.0.1", u.port or 6379)
PY
)
redis_password=$(python3 <<'PY'
import os
from urllib.parse import unquote, urlsplit
print(unquote(urlsplit(os.environ["IAAS_BROKER_URL"]).password or ""))
PY
)
redis_secret=IAAS_BROKER_URL
if [[ -z $redis_password ]]; then
    redis_secret=$secrets_dir/redis
    [[ -s $redis_secret ]] || {
        echo "no Redis password in $redis_secret (scripts/ensure-secrets.sh makes it; 'make up' runs it)" >&2
        exit 1
    }
    redis_password=$(head -n 1 "$redis_secret")
fi
redis_at=$redis_host:$redis_port

redis_cli() { env -u REDISCLI_AUTH redis-cli -h "$redis_host" -p "$redis_port" "$@"; }
redis_ours() { [[ $(REDISCLI_AUTH=$redis_password redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null) == PONG ]]; }
redis_state() {  # down | open (no password) | ours | foreign (a password that is not ours)
    case $(redis_cli ping 2>&1) in
    PONG) echo open ;;
    NOAUTH*) if redis_ours; then echo ours; else echo foreign; fi ;;
    *) echo down ;;
    esac
}
redis_down() { [[ $(redis_state) == down ]]; }
start_redis() {
    local conf_dir=${RUN_DIR:-$PWD/.run}/redis
    local conf=$conf_dir/redis-$redis_port.conf
    echo "==> starting Redis on $redis_at (password from $redis_secret, config $conf)"
    mkdir -p -m 0700 "$conf_dir" /var/lib/redis /var/log/redis
    (
        umask 077
        cat >"$conf" <<CONF
# Written by scripts/start-services.sh at every start of this Redis: it holds the password (0600).
bind 127.0.0.1 -::1
port $redis_port
daemonize yes
dir /var/lib/redis
dbfilename mini-iaas-$redis_port.rdb
logfile /var/log/redis/mini-iaas-$redis_port.log
requirepass "$redis_password"
CONF
    )
    redis-server "$conf"
}

case $redis_host in
127.0.0.1 | localhost | ::1) local_redis=1 ;;
*) local_redis=0 ;;
esac
state=$(redis_state)
case $state in
ours) ;;
down)
    ((local_redis)) || { echo "Redis on $redis_at does not answer; start it there" >&2; exit 1; }
    start_redis
    ;;
open)
    echo "==> Redis on $redis_at has no password: setting the one of $redis_secret (CONFIG SET requirepass)"
    printf 'CONFIG SET requirepass "%s"\n' "$redis_password" | redis_cli >/dev/null
    ;;
foreign)
    cat >&2 <<MSG
==> Redis on $redis_at wants a password other than the one in $redis_secret: another installation on
    this host (another checkout's 'make up') set its own, or the secret was rotated.
MSG
    pids=$(pgrep -f "redis-server [^ ]*:$redis_port( |\$)" || true)
    if ((!local_redis || EUID != 0)) || [[ -z $pids ]]; then
        echo "    Stop that Redis (or give this installation another port in IAAS_BROKER_URL), then run" \
            "'make up' again." >&2
        exit 1
    fi
    cat >&2 <<MSG
    Restarting it (pid $pids) with ours. For mini-iaas Redis only carries wake-up calls: the tasks are
    rows in PostgreSQL, and the outbox sweep re-sends every pending task whose message was lost. The
    other installation loses its broker until it uses another port, or this secret.
MSG
    kill -TERM $pids
    wait_for "the stop of the old Redis" 30 redis_down
    start_redis
    ;;
esac
wait_for "Redis on $redis_at (with the password of $redis_secret)" 30 redis_ours

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
