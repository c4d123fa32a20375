#!/usr/bin/env bash
# Runs Sluice's whole test suite headless: makes sure a Vulkan driver is present (installs
# Mesa's lavapipe as root when none is), pins the Vulkan loader to lavapipe unless
# VK_DRIVER_FILES / VK_ICD_FILENAMES say otherwise, installs Xvfb for the desktop app's smoke
# test, then `cargo test --workspace` and the browser test `web/test.sh`.
# Extra arguments go to cargo test, e.g. `./scripts/test.sh -- decode` (name filter).
set -euo pipefail

cd "$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
# shellcheck source=scripts/vulkan-env.sh
. scripts/vulkan-env.sh

sluice_ensure_toolchain
sluice_vulkan_setup
sluice_ensure_xvfb
trap sluice_cleanup EXIT
sluice_pin_lavapipe

echo "sluice: Vulkan driver: ${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-loader default}}" >&2
cargo test --workspace "$@"
if [ "$#" -eq 0 ]; then
    # The browser test: web/dist built for wasm32, served on 127.0.0.1, driven in headless
    # Chromium (installed by web/test.sh when missing). Skipped only with a test-name filter.
    web/test.sh
fi
