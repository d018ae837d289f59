#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a bounded time each (CI: 60 s).
#
#   scripts/fuzz.sh                      # every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=3600 scripts/fuzz.sh acl_parse
#
# cargo-fuzz needs nightly-only compiler flags; with the stable toolchain
# RUSTC_BOOTSTRAP=1 allows them. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(wire_decode acl_parse mqtt_acl_codec cash_serial_line)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "corpus/$target"
  # libFuzzer reports every new input and newly covered function on a line
  # of its own; keep the rest.
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | awk '!/^#[0-9]+[ \t]/ && !/^[ \t]*NEW_FUNC/'
done
