#!/usr/bin/env bash
# Builds the cash-acceptor firmware (firmware/cash-acceptor/, arduino-mk) and
# its simavr harness (firmware/cash-acceptor/sim/) on Debian.
#
#   scripts/firmware.sh
#
# Installs the AVR toolchain and simavr with apt when missing (through sudo
# when not root): arduino-mk arduino-core-avr gcc-avr avr-libc simavr
# libsimavr-dev. Builds into target/firmware/ (gitignored); make rebuilds
# only what changed, so a second run takes about a second.
#
# stdout is exactly two lines, for scripts/test.sh and the Rust tests
# (kiosk_testkit::SimAcceptor):
#   KIOSK_FIRMWARE_ELF=<absolute path of cash-acceptor.elf>
#   KIOSK_SIMAVR_HARNESS=<absolute path of the harness binary>
# Build output goes to target/firmware/build.log and, on failure, to stderr;
# the exit status is then non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(arduino-mk arduino-core-avr gcc-avr avr-libc simavr libsimavr-dev)
installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)"
missing=()
for pkg in "${packages[@]}"; do
  grep -qx "$pkg install ok installed" <<<"$installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "firmware.sh: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

out="$root/target/firmware"
mkdir -p "$out"
log="$out/build.log"
: >"$log"
build() {
  if ! make -C "$1" >>"$log" 2>&1; then
    echo "firmware.sh: building $1 failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
build firmware/cash-acceptor
build firmware/cash-acceptor/sim

elf="$out/cash-acceptor/cash-acceptor.elf"
harness="$out/sim/harness"
for artifact in "$elf" "$harness"; do
  if [ ! -f "$artifact" ]; then
    echo "firmware.sh: the build did not produce $artifact (see $log)" >&2
    exit 1
  fi
done
echo "KIOSK_FIRMWARE_ELF=$elf"
echo "KIOSK_SIMAVR_HARNESS=$harness"
