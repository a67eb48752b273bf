#!/usr/bin/env bash
# build-tiny-image.sh - build mini-iaas's "tiny" test/demo guest image.
#
# Usage: scripts/build-tiny-image.sh [--force] OUTPUT.qcow2
#
# The image is an unpartitioned ("superfloppy") FAT16 disk holding SYSLINUX,
# a Debian 12 kernel and a busybox initramfs.  SeaBIOS boots it from a
# virtio-blk disk (the production domain's `vda`); the guest prints
#     mini-iaas tiny guest: booted
# on the serial console (ttyS0) and powers off when it gets an ACPI
# power-button press (what `virsh shutdown` sends by default).
#
# Before the marker it reads a cloud-init NoCloud seed (worker/seed: an ISO 9660 image labelled
# `cidata` on any block device, in production the read-only `vdb`) and reports on the console, one
# line each, in this order (<...> are values; lines that do not apply are left out):
#     tiny: seed found on <device>              or: tiny: no seed   (then straight to "configured")
#     tiny: instance-id <id>                     meta-data's instance-id
#     tiny: hostname <name>                      meta-data's local-hostname, now the hostname
#     tiny: interface <name> mac <mac> address <ip/prefix>
#                                                per network-config ethernet: the NIC with that MAC,
#                                                renamed, given its address(es), up
#     tiny: authorized key SHA256:<base64>       per key of the control plane's cloud-config part,
#                                                as `ssh-keygen -lf` prints it
#     tiny: user-data sha256 <hex>|none          of the user's own data, byte for byte as sent
#     tiny: ping <ipv4> answered|no answer       per line "#tiny:ping <ipv4>" of the user's data
#                                                (the line exactly that, trailing blanks or CR
#                                                allowed); up to 60 s each, for a peer still booting
#     tiny: user script exit <rc>                when the user's data starts with "#!": it ran (cwd
#                                                /, output on the console, killed after 120 s)
#     tiny: error <what>                         anything that failed; the rest goes on
#     tiny: configured                           always, right before the marker
#
# Everything comes from Debian 12 packages.  Nothing is mounted, no loop
# devices are used and the kernel is never installed into the host's /boot:
# the kernel .deb is fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`, and the FAT image is written with mtools.
#
# Environment knobs:
#   TINY_KERNEL_PKG   kernel (meta)package to take vmlinuz + modules from
#                     (default: linux-image-cloud-amd64, the smallest flavour)
#   SOURCE_DATE_EPOCH timestamp used for files in the image (default: fixed)
set -euo pipefail

readonly MARKER='mini-iaas tiny guest: booted'
readonly KERNEL_CMDLINE='console=ttyS0 quiet panic=1'
KERNEL_PKG=${TINY_KERNEL_PKG:-linux-image-cloud-amd64}
# A fixed timestamp makes the cpio archive and FAT directory entries
# reproducible between builds of the same package versions.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
# mtools refuses "unusual" FAT geometries of image files without this.
export MTOOLS_SKIP_CHECK=1

log() { printf '==> %s\n' "$*"; }
die() { printf 'build-tiny-image: error: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: $0 [--force] OUTPUT.qcow2" >&2
    exit 2
}

force=0
output=
while (($#)); do
    case $1 in
        --force|-f) force=1 ;;
        -h|--help) usage ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) [[ -z $output ]] || usage; output=$1 ;;
    esac
    shift
done
[[ -n $output ]] || usage

# Idempotence: an existing image is left alone unless --force is given.
if [[ -e $output && $force -eq 0 ]]; then
    echo "build-tiny-image: $output already exists, nothing to do (use --force to rebuild)"
    exit 0
fi

# --------------------------------------------------------------------------
# Host tools.  Only install what is missing, and refresh the package lists
# only when an install (or a lookup) actually needs them.
# --------------------------------------------------------------------------
apt_updated=0
apt_update_once() {
    if ((apt_updated == 0)); then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed; check the Debian mirror in /etc/apt/sources.list*"
        apt_updated=1
    fi
}

# `dpkg -s` alone also succeeds for removed-but-not-purged packages
# (state "rc"), so look at the status itself.
pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}
required_pkgs=(busybox-static syslinux syslinux-common mtools dosfstools cpio qemu-utils)
missing=()
for pkg in "${required_pkgs[@]}"; do
    pkg_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if ((EUID != 0)); then
        die "missing packages: ${missing[*]}; run as root or: sudo apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    apt_update_once
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "could not install ${missing[*]}; install them by hand and rerun"
fi
for cmd in busybox syslinux mcopy mkfs.fat cpio qemu-img dpkg-deb apt-get apt-cache gzip; do
    command -v "$cmd" >/dev/null 2>&1 || die "command '$cmd' not found even though its package is installed; fix the host and rerun"
done
busybox_bin=/bin/busybox
[[ -x $busybox_bin ]] || die "$busybox_bin missing; reinstall busybox-static"
# The guest has no libc, so the busybox must be the static one.
if ! busybox_info=$(LC_ALL=C file -b "$busybox_bin" 2>/dev/null); then busybox_info=unknown; fi
case $busybox_info in *dynamically*) die "$busybox_bin is dynamically linked; install busybox-static" ;; esac
syslinux_bios=/usr/lib/syslinux/modules/bios
[[ -f $syslinux_bios/ldlinux.c32 ]] || die "$syslinux_bios/ldlinux.c32 missing; reinstall syslinux-common"

# --------------------------------------------------------------------------
# Scratch space, always removed.
# --------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/tiny-image.XXXXXX")
tmp_out=
cleanup() {
    rm -rf -- "$work"
    [[ -z $tmp_out ]] || rm -f -- "$tmp_out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# Kernel: resolve the metapackage to the real linux-image-<abi> package,
# download it and unpack it in the scratch dir (never into the host's /boot).
# --------------------------------------------------------------------------
resolve_kernel_pkg() {
    # The metapackage's first Depends is the versioned image package.
    apt-cache depends --important "$KERNEL_PKG" 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(resolve_kernel_pkg || true)
if [[ -z $kpkg ]]; then
    # Empty package lists (fresh container) -> refresh once and retry.
    apt_update_once
    kpkg=$(resolve_kernel_pkg || true)
fi
if [[ -z $kpkg ]]; then
    # Maybe TINY_KERNEL_PKG already names a versioned package.
    if apt-cache show "$KERNEL_PKG" >/dev/null 2>&1; then
        kpkg=$KERNEL_PKG
    else
        die "cannot resolve kernel package '$KERNEL_PKG'; check apt sources or set TINY_KERNEL_PKG"
    fi
fi
log "downloading $kpkg"
mkdir -p "$work/deb" "$work/kernel"
# -o APT::Sandbox::User=root: the scratch dir is mode 0700, so the _apt
# sandbox user could not write into it (apt would only warn, but be quiet).
(cd "$work/deb" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg") \
    || die "apt-get download $kpkg failed; check network access to the Debian mirror"
log "unpacking $kpkg"
dpkg-deb -x "$work"/deb/*.deb "$work/kernel"
vmlinuz=$(find "$work/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
[[ -n $vmlinuz ]] || die "no vmlinuz in $kpkg"
kver=${vmlinuz##*/vmlinuz-}
moddir=$work/kernel/lib/modules/$kver
[[ -d $moddir ]] || die "no /lib/modules/$kver in $kpkg"
kconfig=$work/kernel/boot/config-$kver

# --------------------------------------------------------------------------
# Initramfs
# --------------------------------------------------------------------------
log "building initramfs (busybox $("$busybox_bin" 2>&1 | head -n1 | awk '{print $2}'), kernel $kver)"
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc/acpi/PWRF,var/log,lib/modules}
cp "$busybox_bin" "$root/bin/busybox"
# Links for the applets /init and the acpid handler need before
# `busybox --install` has run (the kernel execs /init via #!/bin/sh).
ln -s busybox "$root/bin/sh"
ln -s ../run "$root/var/run"   # acpid writes its pid file to /var/run

# The ACPI power button (drivers/acpi/button) and the evdev interface that
# busybox acpid listens on are modules in Debian's kernels; ship them (plus
# whatever they depend on, read from each module's .modinfo "depends=").
# Built-in (=y) drivers need nothing.
find_module() {
    # $1: module name (dashes and underscores are interchangeable)
    local pat=${1//[-_]/[-_]}
    find "$moddir/kernel" -name "$pat.ko" -print -quit
}
module_deps() {
    # Comma-separated "depends=" value of a module file, as words.
    grep -a -o 'depends=[A-Za-z0-9_,-]*' "$1" | head -n1 | cut -d= -f2 | tr ',' ' '
}
declare -a load_order=()
declare -A seen=()
add_module() {
    local name=$1 file dep
    [[ -n ${seen[$name]:-} ]] && return 0
    seen[$name]=1
    file=$(find_module "$name")
    [[ -n $file ]] || die "kernel module $name not found in $kpkg"
    for dep in $(module_deps "$file"); do
        add_module "$dep"
    done
    cp "$file" "$root/lib/modules/"
    load_order+=("${file##*/}")    # dependencies first
}
need_module() {
    # $1: Kconfig symbol, $2: module name, $3: what it is needed for
    local state
    state=$(grep -E "^$1=" "$kconfig" | cut -d= -f2 || true)
    case $state in
        y) ;;
        m) add_module "$2" ;;
        *) die "$kpkg lacks $1 (needed for $3); set TINY_KERNEL_PKG to another kernel" ;;
    esac
}
need_module CONFIG_INPUT_EVDEV evdev "ACPI power-button shutdown"
need_module CONFIG_ACPI_BUTTON button "ACPI power-button shutdown"
# The NoCloud seed: a second virtio disk holding an ISO 9660 image, and the virtio NICs it configures.
# (The boot disk needs no driver in the guest: SYSLINUX loads kernel and initramfs through the BIOS.)
need_module CONFIG_VIRTIO_PCI virtio_pci "virtio devices"
need_module CONFIG_VIRTIO_BLK virtio_blk "reading the seed disk"
need_module CONFIG_ISO9660_FS isofs "reading the seed disk"
need_module CONFIG_VIRTIO_NET virtio_net "the seed's network interfaces"
printf '%s\n' "${load_order[@]}" >"$root/lib/modules/load-order"

# busybox acpid maps the power-button key (KEY_POWER) to the action
# "PWRF/00000080", relative to /etc/acpi, and runs it directly.
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# ACPI power button pressed (virsh shutdown / QEMU system_powerdown).
echo "mini-iaas tiny guest: power button, powering off" >/dev/console
sync
# -f: there are no services to stop, ask the kernel for ACPI S5 directly.
exec /bin/busybox poweroff -f
EOF

cat >"$root/init" <<EOF
#!/bin/sh
# PID 1 of the mini-iaas "tiny" guest.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1

for m in \$(cat /lib/modules/load-order); do
    insmod "/lib/modules/\$m" || echo "tiny: insmod \$m failed"
done

# Wait (bounded) for the power button's event device so acpid sees it:
# acpid opens /dev/input/event0.. only once, at start-up.
i=0
while [ ! -e /dev/input/event0 ] && [ \$i -lt 50 ]; do
    sleep 0.1
    i=\$((i + 1))
done
[ -e /dev/input/event0 ] || echo "tiny: no /dev/input/event0, ACPI shutdown will not work"

# acpid writes its pid file only after it has opened the event devices;
# wait for it so that a shutdown request right after the marker line
# below is not lost.
acpid -p /run/acpid.pid -l /var/log/acpid.log
i=0
while [ ! -s /run/acpid.pid ] && [ \$i -lt 50 ]; do
    sleep 0.1
    i=\$((i + 1))
done

hostname tiny
# Configure from the NoCloud seed (/lib/tiny/seed.sh, below), in a shell of its own so that nothing
# it meets can stop this one from reaching the marker line.
sh /lib/tiny/seed.sh </dev/null || echo "tiny: error seed reader exited \$?"
echo "tiny: configured"
echo "$MARKER"

# Stay up; the power-button handler powers the machine off.
while :; do
    sleep 3600
done
EOF
chmod 0755 "$root/init" "$root/etc/acpi/PWRF/00000080"

# What cloud-init's NoCloud datasource would do, reduced to what the tests check; every line it
# prints starts with "tiny: " (the list is at the top of this file). It reads the files as
# worker/seed writes them -- YAML in JSON form, one key or list item a line; MIME parts in base64 --
# not YAML or MIME in general.
mkdir -p "$root/lib/tiny"
cat >"$root/lib/tiny/seed.sh" <<'EOF'
#!/bin/sh
# Run by /init before the marker line. Any failure prints "tiny: error ..." and the rest goes on.
work=/run/tiny
seed=/run/seed
mkdir -p "$work" "$seed"

error() { echo "tiny: error $*"; }

# A JSON string value on a line of the form '  "key": "value",' (the values written are plain).
value_of() { awk -F'"' -v key="$1" '$2 == key { print $4; exit }' "$2"; }

find_seed() {
    # By label, on any block device, as cloud-init does. The drivers probed their disks while /init
    # loaded them; devtmpfs may still be making the nodes, so wait (bounded) for every disk's node.
    i=0
    while [ $i -lt 30 ]; do
        missing=
        for disk in /sys/class/block/*; do
            [ -e "/dev/${disk##*/}" ] || missing=${disk##*/}
        done
        [ -z "$missing" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null
}

configure_interfaces() {
    # One line per ethernet: "name mac address..." (network-config's entries close at indent 4).
    awk -F'"' '
        $2 == "macaddress" { mac = $4 }
        $2 == "set-name" { name = $4 }
        $2 == "addresses" { inlist = 1; addrs = ""; next }
        inlist && /\]/ { inlist = 0; next }
        inlist { addrs = addrs " " $2; next }
        /^    }/ { print name, mac addrs; name = ""; mac = ""; addrs = "" }
    ' "$seed/network-config" >"$work/interfaces" || { error "cannot read network-config"; return; }
    # Rename in two passes (every match to a temporary name first), so that "eth0" may move to the
    # NIC the kernel called eth1 and the other way round.
    n=0
    while read -r name mac addrs; do
        found=
        for dev in /sys/class/net/*; do
            [ "$(cat "$dev/address" 2>/dev/null)" = "$mac" ] && found=${dev##*/}
        done
        if [ -z "$found" ]; then
            error "interface $name: no NIC with mac $mac"
            continue
        fi
        ip link set dev "$found" down
        ip link set dev "$found" name "tiny$n" || error "interface $name: cannot rename $found"
        echo "tiny$n $name $mac $addrs" >>"$work/renamed"
        n=$((n + 1))
    done <"$work/interfaces"
    [ -s "$work/renamed" ] || return 0
    while read -r tmp name mac addrs; do
        ip link set dev "$tmp" name "$name" || { error "interface $name: cannot rename"; name=$tmp; }
        for addr in $addrs; do
            ip addr add "$addr" dev "$name" || error "interface $name: cannot add $addr"
        done
        ip link set dev "$name" up || error "interface $name: cannot bring it up"
        echo "tiny: interface $name mac $mac address $addrs" | tr -s ' '
    done <"$work/renamed"
}

split_user_data() {
    # Each part of the multipart user-data into $work/part.N.{type,name,b64}.
    awk -v dir="$work" '
        { sub(/\r$/, "") }
        boundary == "" && match($0, /boundary="[^"]*"/) { boundary = substr($0, RSTART + 10, RLENGTH - 11); next }
        boundary == "" { next }
        $0 == "--" boundary "--" { exit }
        $0 == "--" boundary { n++; inhead = 1; next }
        n == 0 { next }
        inhead && $0 == "" { inhead = 0; next }
        inhead && tolower($0) ~ /^content-type:/ {
            t = $2; sub(/;.*/, "", t); print t > (dir "/part." n ".type"); close(dir "/part." n ".type")
        }
        inhead && match($0, /filename="[^"]*"/) {
            print substr($0, RSTART + 10, RLENGTH - 11) > (dir "/part." n ".name"); close(dir "/part." n ".name")
        }
        inhead { next }
        { print > (dir "/part." n ".b64") }
    ' "$seed/user-data"
}

fingerprint() {
    # OpenSSH's SHA256:<unpadded base64 of the SHA-256 of the key blob>.
    hex=$(printf '%s' "$1" | base64 -d | sha256sum | cut -c1-64)
    # shellcheck disable=SC2059  # the format is the digest as \xHH escapes
    printf "$(echo "$hex" | sed 's/../\\x&/g')" | base64 | tr -d '=\n'
}

report_keys() {
    awk -F'"' '
        $2 == "ssh_authorized_keys" { inlist = 1; next }
        inlist && /\]/ { inlist = 0; next }
        inlist { print $2 }
    ' "$1" | while read -r kind blob rest; do
        fp=$(fingerprint "$blob") && [ -n "$fp" ] && echo "tiny: authorized key SHA256:$fp" \
            || error "cannot read the key $kind"
    done
}

ping_peers() {
    # Lines "#tiny:ping <IPv4>" in the user's data; the peer may still be booting: up to 60 s each.
    tr -d '\r' <"$1" | sed -n 's/^#tiny:ping \([0-9][0-9.]*\)[[:space:]]*$/\1/p' | while read -r ip; do
        if ping -c 1 -w 60 -q "$ip" >/dev/null 2>&1; then
            echo "tiny: ping $ip answered"
        else
            echo "tiny: ping $ip no answer"
        fi
    done
}

run_user_script() {
    # As cloud-init's scripts-user would: run it, output on the console; bounded here, so that a
    # script that never ends cannot keep the guest from its marker line.
    cp "$1" "$work/user-script" && chmod 0700 "$work/user-script" || { error "cannot copy the script"; return; }
    (cd / && timeout 120 "$work/user-script" </dev/null)
    echo "tiny: user script exit $?"
}

dev=$(find_seed) || { echo "tiny: no seed"; exit 0; }
echo "tiny: seed found on $dev"
mount -t iso9660 -o ro "$dev" "$seed" || { error "cannot mount $dev"; exit 0; }

id=$(value_of instance-id "$seed/meta-data")
name=$(value_of local-hostname "$seed/meta-data")
[ -n "$id" ] && echo "tiny: instance-id $id" || error "no instance-id in meta-data"
if [ -n "$name" ] && hostname "$name"; then
    echo "tiny: hostname $name"
else
    error "no usable local-hostname in meta-data"
fi

ip link set dev lo up
if [ -f "$seed/network-config" ]; then configure_interfaces; fi

user=
if [ -s "$seed/user-data" ]; then
    split_user_data || error "cannot read user-data"
    for type_file in "$work"/part.*.type; do
        [ -f "$type_file" ] || continue
        part=${type_file%.type}
        base64 -d <"$part.b64" >"$part.data" 2>/dev/null || { error "cannot decode ${part##*/}"; continue; }
        if [ "$(cat "$part.name" 2>/dev/null)" = user-data ]; then
            user=$part.data
        elif [ "$(cat "$type_file")" = text/cloud-config ]; then
            report_keys "$part.data"
        fi
    done
fi
if [ -n "$user" ]; then
    echo "tiny: user-data sha256 $(sha256sum "$user" | cut -c1-64)"
    ping_peers "$user"
    [ "$(head -c 2 "$user")" = '#!' ] && run_user_script "$user"
else
    echo "tiny: user-data sha256 none"
fi
umount "$seed" 2>/dev/null
exit 0
EOF
chmod 0755 "$root/lib/tiny/seed.sh"

# Reproducible archive: fixed mtimes, sorted names, uid/gid 0.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) \
    | gzip -9 -n >"$work/initrd.img"

# --------------------------------------------------------------------------
# FAT "superfloppy" disk with SYSLINUX.  SeaBIOS loads sector 0 (the
# SYSLINUX FAT boot sector) from the virtio disk like any MBR; no partition
# table is needed, which keeps the build free of mounts and offsets.
# --------------------------------------------------------------------------
cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $KERNEL_CMDLINE
EOF

kbytes=$(( ($(stat -c %s "$vmlinuz") + $(stat -c %s "$work/initrd.img")) / 1024 ))
# Payload + ~2 MiB for SYSLINUX, FAT tables and slack, rounded up to MiB.
img_mib=$(( (kbytes + 2048 + 1023) / 1024 ))
log "creating ${img_mib} MiB FAT image"
fat=$work/disk.img
# -F 16: FAT16 suits 16-64 MiB; --invariant: fixed volume id and dates.
mkfs.fat -F 16 -n TINY --invariant -C "$fat" $((img_mib * 1024)) >/dev/null

log "installing SYSLINUX and boot files"
syslinux --install "$fat"
cp "$vmlinuz" "$work/vmlinuz"
touch -d "@$SOURCE_DATE_EPOCH" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg"
mcopy -m -i "$fat" "$work/syslinux.cfg" "$work/vmlinuz" "$work/initrd.img" ::/

log "converting to qcow2"
mkdir -p "$(dirname -- "$output")"
# Write next to OUTPUT and rename only when complete, so an interrupted
# build never leaves a half-written OUTPUT that the idempotence check
# above would then accept.
tmp_out=$output.partial.$$
# -c: compress clusters; the image is read-only in practice (guests use
# overlays / copies), so the smaller file is worth it.
qemu-img convert -q -c -f raw -O qcow2 "$fat" "$tmp_out"
mv -f -- "$tmp_out" "$output"
tmp_out=

log "done: $output (kernel $kver, $(stat -c %s "$output") bytes, ${img_mib} MiB virtual)"
