#!/usr/bin/env bash
# Builds (release) and runs the `sluice` CLI, making sure a Vulkan driver is present first
# (installs Mesa's lavapipe as root when none is). The loader's choice of adapter is kept:
# a real GPU is used when its driver is installed; set VK_DRIVER_FILES to force one.
#   ./scripts/run.sh demo            (the main job)
#   ./scripts/run.sh bench delta-rule [--reps N] [--t 256,1024] [--torch] [--json]
set -euo pipefail

cd "$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
# shellcheck source=scripts/vulkan-env.sh
. scripts/vulkan-env.sh

sluice_ensure_toolchain
sluice_vulkan_setup
trap sluice_cleanup EXIT

cargo run --release -p sluice-cli -- "$@"
