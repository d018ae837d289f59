#!/usr/bin/env bash
# Runs the whole kiosk-fleet test suite on a fresh Debian machine.
#
# Installs the outside peers the tests talk to when they are missing:
#   apt: mosquitto (external broker), mosquitto-clients (mosquitto_sub/pub,
#        also the attackers of e2e/tests/security.rs), socat (serial lines by
#        hand), curl (HTTPS checks), chromium + chromium-driver (the payment
#        page in a real browser), cups + cups-client + cups-bsd (a real
#        cupsd for the agent's `cups` driver: device-agent/tests/cups.rs,
#        e2e/tests/cups.rs; they run their own cupsd on a free port, so a
#        packaged cups service on 631 is left alone), fonts-noto-core (the
#        fonts lines in Arabic and other scripts without a code page are
#        drawn with: device-agent's fallback tests, e2e/tests/scripts.rs),
#        nats-server (a real NATS with MQTT configured by `kiosk-gateway
#        broker-config`: e2e/tests/broker_config.rs; a three-node cluster:
#        e2e/tests/cluster.rs; a packaged nats-server service is stopped
#        like mosquitto's)
#   pip: paho-mqtt (a Python backend)
# and exports KIOSK_REQUIRE_CUPS=1, KIOSK_REQUIRE_FONTS=1 and
# KIOSK_REQUIRE_NATS=1, so the cups, font and NATS tests fail instead of
# skipping when cupsd, the fonts or nats-server are
# missing;
# then builds the cash-acceptor firmware and its simavr harness
# (scripts/firmware.sh: installs arduino-mk, arduino-core-avr, gcc-avr,
# avr-libc, simavr, libsimavr-dev when missing; a second run takes about a
# second) and exports KIOSK_FIRMWARE_ELF, KIOSK_SIMAVR_HARNESS and
# KIOSK_REQUIRE_FIRMWARE=1, so the firmware tests run instead of skipping;
# then runs the doc tests; on a full run every fuzz target for FUZZ_SECONDS
# (60) each (scripts/fuzz.sh; KIOSK_SKIP_FUZZ=1 skips it) and the Ansible
# provisioning test (scripts/ansible-test.sh; needs root); the chaos test
# (e2e/tests/chaos.rs); and last every unit, integration and end-to-end
# test of the workspace.
# Extra arguments go to the test runner, e.g. `scripts/test.sh print_path`
# (no fuzzing and no Ansible test then; the firmware is still built).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v socat >/dev/null 2>&1 || missing+=(socat)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/sbin/cupsd ] || missing+=(cups)
{ [ -x /usr/sbin/cupsdisable ] && command -v lpstat >/dev/null 2>&1; } || missing+=(cups-client)
command -v lpr >/dev/null 2>&1 || missing+=(cups-bsd)
[ -f /usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf ] || missing+=(fonts-noto-core)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Tests start their own brokers on free ports; a packaged mosquitto
  # service on 1883 would collide with the demo, so stop it if one runs.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    echo "test.sh: stopping and disabling the packaged mosquitto service (port 1883)" >&2
    as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
  # Likewise the packaged nats-server (client port 4222): tests run their own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nats-server 2>/dev/null; then
    echo "test.sh: stopping and disabling the packaged nats-server service (port 4222)" >&2
    as_root systemctl disable --now nats-server >/dev/null 2>&1 || true
  fi
fi
if ! python3 -c 'import paho.mqtt.client' >/dev/null 2>&1; then
  echo "test.sh: installing paho-mqtt for $(command -v python3)" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'paho-mqtt>=1.6' \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'paho-mqtt>=1.6'
fi

# The real cash-acceptor sketch in simavr (testkit/tests/firmware.rs, and
# any test using kiosk_testkit::SimAcceptor): build it, then make its
# absence an error rather than a skip.
firmware_env="$(scripts/firmware.sh)"
while IFS='=' read -r key value; do
  case "$key" in
    KIOSK_FIRMWARE_ELF | KIOSK_SIMAVR_HARNESS) export "$key=$value" ;;
  esac
done <<<"$firmware_env"
echo "test.sh: firmware $KIOSK_FIRMWARE_ELF, harness $KIOSK_SIMAVR_HARNESS" >&2
export KIOSK_REQUIRE_FIRMWARE=1
# The cups driver's tests start their own cupsd (kiosk_testkit::Cupsd);
# installed above, so its absence is an error, not a skip.
export KIOSK_REQUIRE_CUPS=1
# Installed above too: the fallback-font tests must not skip.
export KIOSK_REQUIRE_FONTS=1
# e2e/tests/broker_config.rs starts its own nats-server with JetStream and
# MQTT; installed above, so its absence is an error, not a skip.
export KIOSK_REQUIRE_NATS=1

cargo test --workspace --doc --quiet
if [ "$#" -eq 0 ] && [ -z "${KIOSK_SKIP_FUZZ:-}" ]; then
  scripts/fuzz.sh
fi
# Provisioning (ansible/): lint, a real playbook run against debootstrapped
# Debian trees, systemd-analyze, and a first test page. Needs root.
if [ "$#" -eq 0 ]; then
  scripts/ansible-test.sh
else
  echo "test.sh: a test filter was given; not running scripts/ansible-test.sh (run it on its own)" >&2
fi
# The chaos test (e2e/tests/chaos.rs, #[ignore]d by default; about two
# minutes): kiosks with jobs and cash flowing while agents, links and the
# gateway fail at random from a seed; prints its counts.
if [ "$#" -eq 0 ]; then
  echo "test.sh: chaos test (seed ${KIOSK_CHAOS_SEED:-9}, ${KIOSK_CHAOS_SECS:-60} s of faults)" >&2
  cargo test -p kiosk-e2e --test chaos --quiet -- --ignored --nocapture
fi
# Last, so the test runner's summary closes the output.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
else
  cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
fi
