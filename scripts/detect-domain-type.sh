#!/usr/bin/env bash
# Prints the libvirt domain type this machine can really run guests with: kvm or qemu.
# /dev/kvm existing is not enough: under some nested virtualisation KVM accepts a guest and then
# fails on its first real-mode instruction. So boot the tiny image with KVM once and see.
set -euo pipefail
image=${1:?usage: detect-domain-type.sh TINY_IMAGE}
here=$(dirname "$0")

if [[ ! -w /dev/kvm ]]; then
    echo qemu
    exit 0
fi
if CHECK_ACCEL=kvm BOOT_TIMEOUT=20 POWEROFF_TIMEOUT=20 "$here/check-tiny-image.sh" "$image" >/dev/null 2>&1; then
    echo kvm
else
    echo qemu
fi
