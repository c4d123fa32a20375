#!/usr/bin/env bash
# The browser test, one command: installs headless Chromium if missing (Debian, as root),
# builds web/dist (web/build.sh: the shipped, size-built engine unless SLUICE_WEB_PROFILE=dev;
# its size is checked against the 16 MB budget), gets the
# native greedy ids of the demo model from `sluice generate` (pinned to lavapipe unless a
# Vulkan driver is already pinned), then drives the page in headless Chromium
# (web/test/browser_test.mjs) and checks ids, training and resume. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR"

chromium=/usr/lib/chromium/chromium
if [[ ! -x $chromium ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "web/test.sh: installing chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "web/test.sh: $chromium is missing; install Debian's chromium package" >&2
    exit 1
  fi
fi
if ! command -v node >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs >/dev/null
  else
    echo "web/test.sh: node is missing" >&2
    exit 1
  fi
fi

max_wasm=()
if [[ "${SLUICE_WEB_PROFILE:-release}" == dev ]]; then
  web/build.sh --dev
else
  web/build.sh --release
  max_wasm=(--max-wasm-bytes 16000000)
fi

# Native greedy ids (and timings) of the same model.
if [[ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]] && ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  VK_DRIVER_FILES=$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | paste -sd:)
  export VK_DRIVER_FILES
fi
# The same build `cargo test --workspace` made (same features: nothing is rebuilt).
cargo test -q --workspace --no-run
sluice="${CARGO_TARGET_DIR:-target}/debug/sluice"
native=web/dist/native.json
{
  echo "{"
  sep=""
  # The last prompt is 81 tokens: past 64, the delta-rule prefill runs its chunked kernels.
  long="$(printf '3141592653%.0s' 1 2 3 4 5 6 7 8)="
  for p in "31415=" "90210=" "55555=" "$long"; do
    printf '%s"%s": ' "$sep" "$p"
    "$sluice" generate --model assets/demo-model --prompt "$p" --max-new-tokens 8 --json
    sep=","
  done
  echo "}"
} > "$native"

# Screenshots of each moment are kept for CI in target/screenshots/web/.
node web/test/browser_test.mjs --dist web/dist --native "$native" --browser "$chromium" \
  --shots "${CARGO_TARGET_DIR:-target}/screenshots/web" "${max_wasm[@]}"

if command -v firefox-esr >/dev/null || command -v firefox >/dev/null; then
  echo "web/test.sh: Firefox is installed, but this test drives Chromium only" >&2
fi
