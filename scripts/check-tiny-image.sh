#!/usr/bin/env bash
# check-tiny-image.sh - boot the "tiny" guest image under QEMU and check it
# really works: it must print its marker line on the serial console and then
# power itself off after an ACPI power-button press (QEMU's
# `system_powerdown`, which is what `virsh shutdown` sends by default).
#
# Usage: scripts/check-tiny-image.sh IMAGE.qcow2
#
# The disk is attached as virtio-blk, like the production domain's `vda`,
# with snapshot=on so the image itself is never written.
#
# Environment knobs (defaults in brackets):
#   CHECK_ACCEL      QEMU accelerator [tcg] (this host is nested: no kvm)
#   CHECK_MACHINE    QEMU machine type [pc]; q35 works too
#   CHECK_MEM_MB     guest memory [128]
#   CHECK_SMP        vCPUs [1]
#   BOOT_TIMEOUT     seconds to wait for the marker line [120]
#   POWEROFF_TIMEOUT seconds to wait for QEMU to exit after powerdown [30]
set -euo pipefail

readonly MARKER='mini-iaas tiny guest: booted'
readonly POWEROFF_LINE='mini-iaas tiny guest: power button, powering off'
accel=${CHECK_ACCEL:-tcg}
machine=${CHECK_MACHINE:-pc}
mem=${CHECK_MEM_MB:-128}
smp=${CHECK_SMP:-1}
boot_timeout=${BOOT_TIMEOUT:-120}
poweroff_timeout=${POWEROFF_TIMEOUT:-30}

die() { printf 'check-tiny-image: FAIL: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*"; }

(($# == 1)) || { echo "usage: $0 IMAGE.qcow2" >&2; exit 2; }
image=$1
[[ -f $image ]] || die "$image not found; build it with scripts/build-tiny-image.sh $image"

# QEMU itself: install it if missing (same policy as the build script).
# `dpkg -s` alone also succeeds for removed-but-not-purged packages
# (state "rc"), so look at the status itself.
pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}
missing=()
for pkg in qemu-system-x86 qemu-utils; do
    pkg_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}; run as root or: sudo apt-get install -y --no-install-recommends ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found; install qemu-system-x86"

# Something to talk to the monitor's unix socket with.
if command -v python3 >/dev/null 2>&1; then
    monitor_cmd() {
        python3 - "$1" "$2" <<'EOF'
import socket, sys
path, cmd = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(path)
def read_prompt():
    buf = b""
    while b"(qemu)" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("monitor closed the connection")
        buf += chunk
# Banner + prompt, then the command, then the next prompt: once that is
# back, QEMU has processed the command.
read_prompt()
s.sendall(cmd.encode() + b"\n")
read_prompt()
s.close()
EOF
    }
elif command -v socat >/dev/null 2>&1; then
    monitor_cmd() { printf '%s\n' "$2" | socat -t 2 - "UNIX-CONNECT:$1" >/dev/null; }
else
    die "need python3 or socat to talk to the QEMU monitor (apt-get install socat)"
fi

# Monotonic-enough wall clock in microseconds (bash 5 EPOCHREALTIME).
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$((10#$t))"; }
secs() { printf '%d.%02d' $(($1 / 1000000)) $(($1 % 1000000 / 10000)); }

work=$(mktemp -d "${TMPDIR:-/tmp}/tiny-check.XXXXXX")
qemu_pid=
cleanup() {
    # Only ever kill the QEMU this script started.
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

serial=$work/serial.log
mon=$work/mon.sock
show_serial() {
    echo "---- serial console ----" >&2
    cat -v "$serial" >&2 2>/dev/null || true
    echo "---- qemu stderr ----" >&2
    cat "$work/qemu.err" >&2 2>/dev/null || true
    echo "------------------------" >&2
}

log "booting $image (accel=$accel machine=$machine mem=${mem}M smp=$smp, virtio-blk)"
: >"$serial"
t_start=$(now_us)
qemu-system-x86_64 \
    -name tiny-check -machine "$machine" -accel "$accel" -m "$mem" -smp "$smp" \
    -display none -no-reboot -no-user-config \
    -drive "file=$image,format=qcow2,if=virtio,snapshot=on" \
    -serial "file:$serial" \
    -monitor "unix:$mon,server=on,wait=off" \
    </dev/null 2>"$work/qemu.err" &
qemu_pid=$!

# Poll the serial log for the marker, with a deadline; bail out early if
# QEMU dies.
deadline=$((t_start + boot_timeout * 1000000))
until grep -qF "$MARKER" "$serial"; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        show_serial; die "qemu exited before the guest printed '$MARKER'"
    fi
    if (($(now_us) > deadline)); then
        show_serial; die "no '$MARKER' on the serial console within ${boot_timeout}s"
    fi
    sleep 0.1
done
t_booted=$(now_us)
boot_time=$(secs $((t_booted - t_start)))
log "marker seen after ${boot_time}s"

# ACPI power button, exactly what `virsh shutdown` does by default.
[[ -S $mon ]] || die "monitor socket $mon missing"
log "sending system_powerdown"
t_pd=$(now_us)
monitor_cmd "$mon" system_powerdown || { show_serial; die "could not send system_powerdown"; }

# QEMU must exit on its own (guest ACPI S5), within the deadline.
deadline=$((t_pd + poweroff_timeout * 1000000))
while kill -0 "$qemu_pid" 2>/dev/null; do
    if (($(now_us) > deadline)); then
        show_serial; die "guest did not power off within ${poweroff_timeout}s of system_powerdown"
    fi
    sleep 0.1
done
t_off=$(now_us)
rc=0
wait "$qemu_pid" || rc=$?
qemu_pid=
off_time=$(secs $((t_off - t_pd)))
((rc == 0)) || { show_serial; die "qemu exited with status $rc"; }
# A kernel panic would also end QEMU (-no-reboot); insist on a clean path.
if grep -q 'Kernel panic' "$serial"; then
    show_serial; die "guest panicked"
fi
grep -qF "$POWEROFF_LINE" "$serial" || { show_serial; die "guest exited without running its power-button handler"; }

log "qemu exited by itself ${off_time}s after system_powerdown"
echo "PASS: $image boot_to_marker=${boot_time}s powerdown_to_exit=${off_time}s (accel=$accel machine=$machine)"
