#!/usr/bin/env bash
# keycam arm64 check: runs the README's demo command and the device-side tests in an emulated
# 64-bit Raspberry Pi OS userland (Debian bookworm arm64, qemu-user via binfmt), once per Pi CPU:
#   Pi 4 (Cortex-A72) and Pi 5 (Cortex-A76).
#   scripts/arm64-check.sh [pi4|pi5 ...]        (default: both; needs root for chroot and mounts)
#   KEYCAM_SHARED=DIR: the project's shared data folder when it is not ../shared
# The rootfs is built once with mmdebstrap and cached in $KEYCAM_ARM64_CACHE (default
# /var/cache/keycam-arm64), keyed by suite and package list. One clean copy of the committed tree
# (git archive HEAD) is installed once and shared by the CPUs. Prints one pass/fail line per CPU and
# a total; exits non-zero if any CPU failed. When the machine cannot run arm64 binaries (no root, no binfmt_misc) it prints
# "arm64 check skipped: <reason>" and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PACKAGES=(python3 python3-venv python3-dev git ca-certificates mosquitto socat)
CACHE="${KEYCAM_ARM64_CACHE:-/var/cache/keycam-arm64}"
SHARED="${KEYCAM_SHARED:-$repo/../shared}"    # research data beside the checkout, as in CI
DEVICE_TESTS=(tests/edge tests/hardware tests/hil)

skip() { echo "arm64 check skipped: $*"; exit 0; }
say() { echo "== arm64: $*" >&2; }

cpus=("$@"); [ "${#cpus[@]}" -gt 0 ] || cpus=(pi4 pi5)
for cpu in "${cpus[@]}"; do
    case "$cpu" in pi4|pi5) ;; *) echo "usage: scripts/arm64-check.sh [pi4|pi5 ...]" >&2; exit 2;; esac
done

[ "$(id -u)" -eq 0 ] || skip "needs root (chroot and bind mounts); run it as root or in CI"
[ "$(uname -m)" != aarch64 ] || skip "this machine is arm64 already: run scripts/bootstrap.sh test natively"

# Host tools (Debian): qemu-user-static registers its binfmt handlers with the F flag, so the
# emulator is opened on the host and nothing is copied into the rootfs.
missing=()
for pkg in qemu-user-static binfmt-support mmdebstrap; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || skip "could not install ${missing[*]} with apt-get"
fi
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
    || skip "the kernel or container does not allow mounting binfmt_misc"
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ "$(head -n1 "$binfmt/qemu-aarch64" 2>/dev/null)" = enabled ] \
    || skip "the qemu-aarch64 binfmt handler cannot be enabled (update-binfmts --enable qemu-aarch64 failed)"
grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
    || skip "the qemu-aarch64 binfmt handler lacks the F (fix binary) flag"

# One run at a time per cache (the rootfs is shared state).
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9

unmount_below() {  # every mount point at or below $1, deepest first (what a killed run left behind)
    local target
    findmnt -rn -o TARGET | awk -v p="$1" '$0 == p || index($0, p "/") == 1' | sort -r |
        while read -r target; do umount "$target" 2>/dev/null || umount -l "$target"; done
}
unmount_below "$CACHE"   # before anything below it is removed: never delete through a bind mount

key=$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-12)
rootfs="$CACHE/rootfs-$SUITE-$key"
if [ ! -e "$rootfs/.keycam-complete" ]; then
    rm -rf "$rootfs" "$rootfs.partial"
    say "building the arm64 $SUITE rootfs (${PACKAGES[*]}) in $rootfs; takes several minutes, cached afterwards"
    mmdebstrap --quiet --arch=arm64 --variant=apt --mode=root --include="$(IFS=,; echo "${PACKAGES[*]}")" \
        "$SUITE" "$rootfs.partial" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb http://deb.debian.org/debian-security $SUITE-security main"
    touch "$rootfs.partial/.keycam-complete"
    mv "$rootfs.partial" "$rootfs"
    for old in "$CACHE"/rootfs-*; do [ "$old" = "$rootfs" ] || rm -rf "$old"; done
else
    say "reusing the cached rootfs $rootfs"
fi

# Every mount is recorded and undone on exit, in reverse order, whatever happened.
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
    done
    mounts=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mnt() { mount "$@"; mounts+=("${!#}"); }

# A Raspberry Pi /proc/cpuinfo: qemu passes the host's x86 one through, and LiteRT's CPU detection
# crashes on it. Args: model, CPU variant, part, revision, features, board revision code.
pi_cpuinfo() {
    local n
    for n in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$n" "$5"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$2" "$3" "$4"
    done
    printf 'Revision\t: %s\nSerial\t\t: 10000000c0ffee00\nModel\t\t: %s\n' "$6" "$1"
}

run_cpu() {  # name -> $cpu_status: exit status of the demo and the device tests on that CPU
    local name="$1" qemu_cpu cpuinfo
    case "$name" in
        pi4) qemu_cpu=cortex-a72
             cpuinfo=$(pi_cpuinfo "Raspberry Pi 4 Model B Rev 1.4" 0x0 0xd08 3 \
                 "fp asimd evtstrm crc32 cpuid" c03114) ;;
        pi5) qemu_cpu=cortex-a76
             cpuinfo=$(pi_cpuinfo "Raspberry Pi 5 Model B Rev 1.0" 0x4 0xd0b 1 \
                 "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" \
                 d04170) ;;
    esac
    printf '%s\n' "$cpuinfo" > "$rootfs/etc/keycam-cpuinfo"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"

    mnt -t proc proc "$rootfs/proc"
    mnt --bind /sys "$rootfs/sys"
    mnt --bind /dev "$rootfs/dev"
    mnt --bind /dev/pts "$rootfs/dev/pts"
    mnt -t tmpfs tmpfs "$rootfs/dev/shm"
    mnt --bind "$rootfs/etc/keycam-cpuinfo" "$rootfs/proc/cpuinfo"
    if [ -d "$SHARED" ]; then mnt --bind -o ro "$SHARED" "$rootfs/src/shared"; fi

    cpu_status=0
    env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_COMPILE=1 QEMU_CPU="$qemu_cpu" chroot "$rootfs" /bin/bash -euc '
            cd /src/keycam
            grep -m1 "^Model" /proc/cpuinfo >&2
            scripts/bootstrap.sh demo
            .venv/bin/python -m pip install -q -e ".[device,host,dev]"
            .venv/bin/python -m pytest -q -p no:cacheprovider "$@"' arm64-check "${DEVICE_TESTS[@]}" \
        || cpu_status=$?
    cleanup
}

# One clean checkout of what is committed (../shared beside it, as in CI) for all CPUs: the first CPU
# creates its .venv, the next ones find everything installed and only run the demo and the tests.
rm -rf "$rootfs/src"
mkdir -p "$rootfs/src/keycam" "$rootfs/src/shared"
git -C "$repo" archive HEAD | tar -x -C "$rootfs/src/keycam"
trap 'cleanup; rm -rf "$rootfs/src"' EXIT

failed=0
results=()
for cpu in "${cpus[@]}"; do
    say "$cpu: demo and device tests"
    start=$SECONDS
    run_cpu "$cpu"  # not in a condition, so a failed mount or copy stops the script (errexit)
    if [ "$cpu_status" -eq 0 ]; then verdict=pass; else verdict=FAIL; failed=$((failed + 1)); fi
    results+=("arm64 $cpu: $verdict ($((SECONDS - start)) s)")
done
printf '%s\n' "${results[@]}"
echo "arm64 check: $(( ${#cpus[@]} - failed ))/${#cpus[@]} CPUs passed"
[ "$failed" -eq 0 ]
