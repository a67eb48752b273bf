#!/usr/bin/env bash
# check-install.sh - prove that a fresh minimal Debian 12 installs mini-iaas as a new user would.
#
# Usage: scripts/check-install.sh        (as root; `make check-install` runs it)
#
# It creates a new `debootstrap --variant=minbase bookworm` chroot in a temporary folder, copies
# this checkout's tracked files into it (as they are in the work tree, uncommitted edits included;
# untracked and ignored files such as .venv stay out), and runs there, with a clean environment:
#     apt-get install make python3      (--no-install-recommends: nothing more than asked for)
#     pip install . in a venv        (the API-only install: no libvirt headers, no worker extra)
#     make deps && make venv
#     make deps                         (again: it must be idempotent)
# then proves the venv works: the key imports, the installed versions equal requirements.lock,
# and the unit tests pass. Services cannot start inside the chroot (a policy-rc.d that exits
# 101), so nothing there competes with the host's PostgreSQL, Redis or libvirtd. The chroot is
# always unmounted and removed on exit. It takes about 5 minutes and downloads about 250 MB
# (the base system, ~190 MB of Debian packages, the PyPI packages).
# What it takes from the host: the mirror (below), /etc/resolv.conf, the proxy variables and
# PIP_INDEX_URL if set, and the site-local CA certificates in /usr/local/share/ca-certificates:
# only this network's settings.
#
# Environment knobs:
#   CHECK_INSTALL_MIRROR  Debian mirror (http or https) to debootstrap from [the host's own: the
#                         first enabled `deb` source for the suite in /etc/apt/sources.list.d/*.sources,
#                         else in /etc/apt/sources.list or /etc/apt/sources.list.d/*.list]
#   CHECK_INSTALL_SUITE   Debian suite [bookworm]
#   CHECK_INSTALL_LOG     full log of the run [$RUN_DIR/check-install.log, else .run/check-install.log]
#   CHECK_INSTALL_KEEP    1: keep the chroot (unmounted) for a post-mortem instead of removing it
#   TMPDIR                where the chroot is made [/var/tmp]
set -euo pipefail

suite=${CHECK_INSTALL_SUITE:-bookworm}
here=$(cd "$(dirname "$0")/.." && pwd)
log_file=${CHECK_INSTALL_LOG:-${RUN_DIR:-$here/.run}/check-install.log}
keep=${CHECK_INSTALL_KEEP:-0}
project_dir=/root/mini-iaas   # where the checkout goes inside the chroot

elapsed() { printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)); }
log() { printf '==> [%s] %s\n' "$(elapsed)" "$*"; }
die() { printf 'check-install: FAIL: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "needs root (debootstrap, chroot and mounts); run it as root"
command -v git >/dev/null || die "git not found: the checkout's tracked files are listed with git"
git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$here is not a git work tree"

# --------------------------------------------------------------------------
# The mirror: the one this host's apt uses, unless CHECK_INSTALL_MIRROR says otherwise.
# --------------------------------------------------------------------------
host_mirror() {
    local f
    # deb822 files: the first enabled stanza of type deb whose Suites list has the suite.
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v suite="$suite" '
            function flush() {
                if (!found && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ") \
                    && tolower(enabled) != "no" && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1
                }
                types = suites = uris = enabled = key = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { if (key == "uris") uris = uris " " $0; else if (key == "suites") suites = suites " " $0; next }
            {
                key = tolower($1); sub(/:$/, "", key); $1 = ""; val = $0
                gsub(/\t/, " ", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "enabled") { enabled = val; gsub(/ /, "", enabled) }
            }
            END { flush() }' "$f"
    done
    # One-line format: "deb [options] URI SUITE COMPONENTS...".
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
    done
}
mirror=${CHECK_INSTALL_MIRROR:-}
if [[ -z $mirror ]]; then
    candidates=$(host_mirror)
    mirror=${candidates%%$'\n'*}
fi
[[ -n $mirror ]] || die "found no 'deb' source for $suite in /etc/apt/sources.list*; set CHECK_INSTALL_MIRROR"
case $mirror in
http://* | https://*) ;;
*) die "mirror '$mirror' is not http(s); set CHECK_INSTALL_MIRROR to an http(s) Debian mirror" ;;
esac

# --------------------------------------------------------------------------
# Host tools
# --------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap on this host"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
        || die "could not install debootstrap"
fi

mkdir -p "$(dirname "$log_file")"
: >"$log_file"

# --------------------------------------------------------------------------
# The chroot, and its removal whatever happens
# --------------------------------------------------------------------------
root=$(mktemp -d "${TMPDIR:-/var/tmp}/check-install.XXXXXX")
chmod 0755 "$root"
mounted=()   # mount points inside the chroot, in mount order

mounts_under_root() {  # mount points at or below $root still mounted, deepest first
    awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
stop_chroot_processes() {
    # Only processes whose root is this chroot: everything there was started by this script.
    local sig pid pids
    for sig in TERM KILL; do
        pids=()
        for pid in /proc/[0-9]*; do
            [[ $(readlink "$pid/root" 2>/dev/null) == "$root" ]] && pids+=("${pid#/proc/}")
        done
        ((${#pids[@]})) || return 0
        echo "    stopping processes left in the chroot (SIG$sig): ${pids[*]}" >&2
        kill -"$sig" "${pids[@]}" 2>/dev/null || true
        sleep 2
    done
}
job=         # the running step (see logged), the leader of a process group of its own
cleanup() {
    local rc=$? m i
    trap - EXIT INT TERM
    if [[ -n $job ]]; then   # interrupted: stop the step, debootstrap or the chrooted command
        kill -TERM -- "-$job" 2>/dev/null || true
        wait "$job" 2>/dev/null || true
    fi
    stop_chroot_processes
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
    done
    # Whatever else is mounted there (debootstrap's own mounts after a failure, say).
    for m in $(mounts_under_root); do umount -l "$m" 2>/dev/null || true; done
    # Belt and braces: never `rm -rf` through a live bind mount of the host's /dev.
    m=$(mounts_under_root)
    if [[ -n $m ]]; then
        echo "check-install: still mounted, NOT removing $root:" >&2
        echo "$m" >&2
        ((rc != 0)) || rc=1
    elif [[ $keep == 1 ]]; then
        echo "==> kept the chroot (unmounted) in $root; remove it with: rm -rf --one-file-system $root"
    else
        rm -rf --one-file-system -- "$root"
    fi
    if ((rc == 130 || rc == 143)); then
        echo "check-install: interrupted after $(elapsed); cleaned up" >&2
    elif ((rc != 0)); then
        echo "check-install: FAIL after $(elapsed); last lines of $log_file:" >&2
        tail -n 40 "$log_file" >&2 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command, its output going to the log and its "==> ..." progress lines to the terminal too.
# It runs in the background, in a process group of its own, and is waited for: so INT or TERM end
# the script at once (bash runs a trap only after the foreground command) and cleanup can stop it.
logged() {
    local status=0
    # shellcheck disable=SC2016  # expanded by that bash
    LOG=$log_file setsid bash -c \
        '"$@" 2>&1 </dev/null | tee -a "$LOG" | { grep --line-buffered "^==> " || true; }; exit "${PIPESTATUS[0]}"' \
        logged "$@" &
    job=$!
    wait "$job" || status=$?
    job=
    return "$status"
}

log "debootstrap --variant=minbase $suite from $mirror into $root (a few minutes)"
include=()
# apt inside the chroot needs CA certificates for an https mirror; minbase has none.
[[ $mirror == https://* ]] && include=(--include=ca-certificates)
logged debootstrap --variant=minbase "${include[@]}" "$suite" "$root" "$mirror" \
    || die "debootstrap failed (see $log_file)"

log "preventing services from starting in the chroot (policy-rc.d exits 101)"
printf '#!/bin/sh\n# check-install.sh: no service may start in this chroot.\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The chroot is on this host's network: it trusts the same site-local CA certificates (those of a
# TLS-inspecting proxy, say). ca-certificates, once `make deps` installs it, adds them to the bundle.
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    log "trusting this host's site-local CA certificates in the chroot too"
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    if [[ -x $root/usr/sbin/update-ca-certificates ]]; then   # an https mirror brought it already
        chroot "$root" /usr/sbin/update-ca-certificates >>"$log_file" 2>&1
    fi
fi

mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
if [[ -d /dev/pts ]]; then
    mount --bind /dev/pts "$root/dev/pts" && mounted+=("$root/dev/pts")
fi

log "copying the checkout's tracked files ($(git -C "$here" rev-parse --short HEAD)$(
    git -C "$here" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted edits')) to $project_dir"
mkdir -p "$root$project_dir"
# Tracked files as they are in the work tree; a tracked file deleted there is left out.
(cd "$here" && git ls-files -z --cached \
    | while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done \
    | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$root$project_dir"
[[ -f $root$project_dir/Makefile ]] || die "the copy has no Makefile"

# The chroot starts from a clean environment, like a new login, plus the host's proxy settings.
chroot_env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL; do
    [[ -n ${!v:-} ]] && chroot_env+=("$v=${!v}")
done
# "${in_chroot[@]}" SCRIPT runs SCRIPT with bash in the project folder inside the chroot.
in_chroot=(chroot "$root" /usr/bin/env -i -C "$project_dir" "${chroot_env[@]}" /bin/bash -euo pipefail -c)

log "apt-get install make python3 (in the chroot)"
logged "${in_chroot[@]}" 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends make python3' \
    || die "apt-get install make python3 failed in the chroot"

# Before `make deps` brings libvirt's headers: the API-only install (no `worker` extra), as the
# Dockerfile's api image makes it, must need no libvirt at all -- nothing of it is installed yet, so
# a build of libvirt-python would fail here. The lock's versions are its constraints.
log "API-only install: pip install . without libvirt's headers (in the chroot)"
# shellcheck disable=SC2016  # expanded inside the chroot
logged "${in_chroot[@]}" '
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python3-dev gcc libpq-dev
if dpkg-query -W -f="\${db:Status-Abbrev}" libvirt-dev 2>/dev/null | grep -q "^ii"; then
    echo "libvirt-dev is installed already: the API-only install would prove nothing" >&2; exit 1
fi
grep -E "^[a-z0-9]" requirements.lock | cut -d" " -f1 > /tmp/constraints.txt
python3 -m venv /tmp/api-venv
PIP_CONSTRAINT=/tmp/constraints.txt /tmp/api-venv/bin/pip install -q .
/tmp/api-venv/bin/pip check
if /tmp/api-venv/bin/pip show -q libvirt-python pycdlib 2>/dev/null; then
    echo "the API-only install brought a package of the worker extra" >&2; exit 1
fi
cd /tmp && /tmp/api-venv/bin/python -c "import sys, api; from common.celery_app import app; api.create_app(); app.loader.init_worker(); assert \"libvirt\" not in sys.modules"
echo "==> API-only install ok: api, beat'"'"'s app, no libvirt-python, no pycdlib"
rm -rf /tmp/api-venv /tmp/constraints.txt
' || die "the API-only install (pip install . without libvirt) failed in a fresh $suite chroot"

log "make deps (in the chroot; installs PostgreSQL, Redis, libvirt, qemu and the build headers)"
logged "${in_chroot[@]}" 'make deps' || die "'make deps' failed in a fresh $suite chroot"

log "make venv (in the chroot; builds psycopg2 and libvirt-python from source)"
logged "${in_chroot[@]}" 'make venv' || die "'make venv' failed in a fresh $suite chroot"

log "make deps again: it must find everything present"
# shellcheck disable=SC2016  # expanded inside the chroot
logged "${in_chroot[@]}" 'out=$(make deps); echo "$out"; [[ $out == *"all present"* ]]' \
    || die "a second 'make deps' still wanted to install packages"

log "checking the venv: imports, versions equal to requirements.lock, unit tests"
# shellcheck disable=SC2016  # expanded inside the chroot
logged "${in_chroot[@]}" '
.venv/bin/python -c "import psycopg2, libvirt, flask, celery, sqlalchemy, api, worker, common"
echo "==> imports ok: psycopg2, libvirt, flask, celery, sqlalchemy, api, worker, common"
normalise() { awk -F"==" "{ n = tolower(\$1); gsub(/[._]/, \"-\", n); print n \"==\" \$2 }" | sort; }
if ! diff <(.venv/bin/pip freeze --all --exclude-editable | normalise) \
          <(grep -E "^[a-z0-9]" requirements.lock | cut -d" " -f1 | normalise); then
    echo "the venv differs from requirements.lock (< venv, > lock)" >&2
    exit 1
fi
echo "==> the venv holds exactly the $(grep -cE "^[a-z0-9]" requirements.lock) pinned versions of requirements.lock"
.venv/bin/pytest -m unit -q -p no:cacheprovider >/tmp/unit.log 2>&1 || { cat /tmp/unit.log; exit 1; }
cat /tmp/unit.log
echo "==> unit tests: $(tail -n 1 /tmp/unit.log)"
' || die "the venv made in the chroot does not work (see $log_file)"

leftovers=$(for pid in /proc/[0-9]*; do
    [[ $(readlink "$pid/root" 2>/dev/null) == "$root" ]] && echo "${pid#/proc/}"
done || true)
[[ -z $leftovers ]] || die "processes run in the chroot although services must not start: $leftovers"

log "PASS: a fresh minbase $suite chroot ran 'make deps && make venv' and got a working venv in $(elapsed)"
