#!/usr/bin/env bash
# Starts, stops and shows the mini-iaas processes: api (gunicorn), worker, beat, flower, events.
# Each runs in the background with its pid file and log in the run folder; `down` stops exactly these.
# Started as root, the API, beat and Flower run as the service user (IAAS_SERVICE_USER); the worker and
# the event listener stay root, for libvirt (docs/operations.md: Users).
#   scripts/stack.sh up|down|status
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
run_dir=${RUN_DIR:?RUN_DIR must be set (the Makefile sets it)}
venv=${VENV:?VENV must be set}
api_bind=${IAAS_API_BIND:-127.0.0.1:8080}
flower_port=${IAAS_FLOWER_PORT:-5555}
service_user=${IAAS_SERVICE_USER:-mini-iaas}
log_dir=$run_dir/log
beat_dir=$run_dir/beat   # beat's schedule: a folder the service user owns
# The API's gunicorn workers keep their Prometheus counters here, so that a scrape of either worker
# adds up both (api/metrics.py); emptied by gunicorn as it starts.
api_metrics_dir=$run_dir/metrics-api
processes=(api worker beat flower events)
unprivileged=(api beat flower)
# Logs, and what the processes create (the worker's console-log folder), are not for other users.
umask 027

# The prefix that runs a command as the service user: setpriv (util-linux, in every Debian) switches
# user, group and supplementary groups and execs, so the pid file names the process itself.
as_service=()
if ((EUID == 0)); then
    as_service=(setpriv --reuid="$service_user" --regid="$service_user" --init-groups)
fi

pid_of() { cat "$run_dir/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

command_for() {
    case $1 in
    # --env, not env(1): set in gunicorn before it loads the app, whose prometheus_client reads it at import.
    api) echo "$venv/bin/gunicorn -c $root/api/gunicorn_config.py --env PROMETHEUS_MULTIPROC_DIR=$api_metrics_dir --bind $api_bind api:create_app()" ;;
    worker) echo "$venv/bin/celery -A worker.celery_app worker --pool threads --hostname worker@%h --loglevel INFO" ;;
    beat) echo "$venv/bin/celery -A common.celery_app beat --schedule $beat_dir/celerybeat-schedule --loglevel INFO" ;;
    flower) echo "$venv/bin/celery -A common.celery_app flower --conf=$root/worker/flower_config.py --address=127.0.0.1 --port=$flower_port" ;;
    events) echo "$venv/bin/iaas-events" ;;
    esac
}

unprivileged() { [[ " ${unprivileged[*]} " == *" $1 "* ]]; }

prepare() {  # the folders and files the processes need, with their owners and modes
    local name console_dir=${IAAS_CONSOLE_LOG_DIR:-/var/log/mini-iaas/console}
    mkdir -p "$log_dir" "$beat_dir" "$api_metrics_dir"
    chmod 0750 "$log_dir"
    for name in "${processes[@]}"; do
        touch "$log_dir/$name.log"
        chmod 0640 "$log_dir/$name.log"
    done
    chmod 0700 "$beat_dir" "$api_metrics_dir"
    ((${#as_service[@]} == 0)) && return
    if ! id -u "$service_user" >/dev/null 2>&1; then
        echo "no user $service_user: scripts/ensure-service-user.sh creates it ('make up' runs it)" >&2
        exit 1
    fi
    chown "$service_user:$service_user" "$beat_dir" "$api_metrics_dir"
    # The guests' consoles (virtlogd writes them as root; the worker deletes them with the VM).
    mkdir -p "$console_dir"
    chmod 0750 "$console_dir"
    grant_traversal "$root" "$venv" "$run_dir"
    # The service user must be able to read the checkout and the venv: fail here, not in a log.
    if ! (cd / && "${as_service[@]}" "$venv/bin/python" -c 'import api, common' 2>/dev/null); then
        echo "the service user $service_user cannot read $root or $venv: a folder on their path is" \
            "closed to other users (like /root); move the checkout, or open those folders (chmod o+x)" >&2
        exit 1
    fi
}

# A checkout in a folder closed to other users (mktemp -d makes 0700 folders; /root is 0700) would keep
# the service user from the code: it is given the right to pass through (x, not to list) each such
# folder above the checkout -- by an ACL naming only that user where the file system takes one (package
# acl), else by o+x -- and told so.
grant_traversal() {
    local path dir
    local -a ancestors
    for path in "$@"; do
        ancestors=()
        dir=$path
        while [[ $dir != / ]]; do
            ancestors=("$dir" "${ancestors[@]}")
            dir=$(dirname "$dir")
        done
        # from the top down: a folder looks closed as long as one above it is
        for dir in "${ancestors[@]}"; do
            if [[ -d $dir ]] && ! "${as_service[@]}" test -x "$dir" 2>/dev/null; then
                if setfacl -m "u:$service_user:x" "$dir" 2>/dev/null; then
                    echo "    $dir: closed to $service_user; granted it passage only (ACL u:$service_user:x)"
                else
                    chmod o+x "$dir"
                    echo "    $dir: closed to other users; made passable (o+x, no listing) for $service_user"
                fi
            fi
        done
    done
}

port_taken() {  # port_taken HOST:PORT -> 0 when something already listens there
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

start() {
    local name=$1
    if alive "$name"; then
        echo "    $name: already running (pid $(pid_of "$name"))"
        return
    fi
    local -a cmd user=()
    read -r -a cmd <<<"$(command_for "$name")"
    unprivileged "$name" && user=("${as_service[@]}")
    # setsid: its own process group, so `down` can stop it with every child it spawned. The log is
    # opened here, by root: the process writes to it without being able to open (or delete) it.
    setsid "${user[@]}" "${cmd[@]}" >>"$log_dir/$name.log" 2>&1 </dev/null &
    echo $! >"$run_dir/$name.pid"
    echo "    $name: started as $(if ((${#user[@]})); then echo "$service_user"; else id -un; fi)" \
        "(pid $!, log $log_dir/$name.log)"
}

stop() {
    local name=$1 pid deadline
    pid=$(pid_of "$name")
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$run_dir/$name.pid"
        return
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "    $name: did not stop in 20 s, killing"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    fi
    rm -f "$run_dir/$name.pid"
    echo "    $name: stopped"
}

wait_ready() {
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://$api_bind/readyz" >/dev/null 2>&1; do
        if ! alive api; then
            echo "the API exited; last lines of $log_dir/api.log:" >&2
            tail -n 20 "$log_dir/api.log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "the API did not become ready in 60 s: curl http://$api_bind/readyz says why" >&2
            return 1
        fi
        sleep 0.2
    done
}

case ${1:-} in
up)
    prepare
    if ! alive api && port_taken "$api_bind"; then
        echo "$api_bind is already taken by another program (another mini-iaas checkout?);" \
            "stop it (make down there) or set IAAS_API_BIND" >&2
        exit 1
    fi
    echo "==> starting the mini-iaas processes"
    for name in "${processes[@]}"; do start "$name"; done
    wait_ready
    echo "==> the API answers on http://$api_bind (readyz ok)"
    ;;
down)
    echo "==> stopping the mini-iaas processes"
    for name in "${processes[@]}"; do stop "$name"; done
    ;;
status)
    for name in "${processes[@]}"; do
        if alive "$name"; then
            printf '    %-7s running (pid %s)\n' "$name" "$(pid_of "$name")"
        else
            printf '    %-7s stopped\n' "$name"
        fi
    done
    printf '    readyz  %s\n' "$(curl -sS "http://$api_bind/readyz" 2>&1 || true)"
    ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
