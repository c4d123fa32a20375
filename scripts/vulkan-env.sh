# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/run.sh: makes a fresh Debian machine able to build
# and run Sluice. Defines:
#
#   sluice_ensure_toolchain   cargo (via rustup) and a C linker, if missing
#   sluice_vulkan_setup       a Vulkan driver (installs Mesa's lavapipe, a CPU Vulkan driver,
#                             when no driver is present) and XDG_RUNTIME_DIR
#   sluice_pin_lavapipe       makes the Vulkan loader use lavapipe only (deterministic tests),
#                             unless VK_DRIVER_FILES / VK_ICD_FILENAMES are already set
#   sluice_ensure_xvfb        Xvfb and the X11 client libraries winit loads at run time (the
#                             desktop app's smoke test runs the app under xvfb-run)
#
# Installing needs root (apt-get); without root a missing piece is reported with the command
# that would install it.

SLUICE_ICD_DIRS=(/usr/share/vulkan/icd.d /etc/vulkan/icd.d)

_sluice_is_root() { [ "$(id -u)" -eq 0 ]; }

_sluice_apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "sluice: cannot install $* here (no apt-get); please install the equivalent packages" >&2
        return 1
    fi
    if [ -z "${_SLUICE_APT_UPDATED:-}" ]; then
        echo "sluice: apt-get update" >&2
        apt-get update -qq
        _SLUICE_APT_UPDATED=1
    fi
    echo "sluice: apt-get install $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The lavapipe ICD manifests (lvp_icd.<arch>.json), one per line.
_sluice_lavapipe_icds() {
    local d
    for d in "${SLUICE_ICD_DIRS[@]}"; do
        compgen -G "$d/lvp_icd*.json" || true
    done
}

# Any ICD manifest at all (a GPU vendor's driver or lavapipe).
_sluice_any_icd() {
    local d
    for d in "${SLUICE_ICD_DIRS[@]}"; do
        if compgen -G "$d/*.json" >/dev/null; then
            return 0
        fi
    done
    return 1
}

sluice_ensure_toolchain() {
    if ! command -v cc >/dev/null 2>&1; then
        if _sluice_is_root; then
            _sluice_apt_install build-essential pkg-config
        else
            echo "sluice: no C compiler/linker (cc) found; as root run: apt-get install -y build-essential" >&2
            return 1
        fi
    fi
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if ! command -v curl >/dev/null 2>&1; then
            if _sluice_is_root; then
                _sluice_apt_install curl ca-certificates
            else
                echo "sluice: neither cargo nor curl found; install Rust from https://rustup.rs" >&2
                return 1
            fi
        fi
        echo "sluice: installing the Rust toolchain with rustup (https://rustup.rs)" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --default-toolchain stable
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
}

sluice_vulkan_setup() {
    if [ -z "$(_sluice_lavapipe_icds)" ] && ! _sluice_any_icd; then
        if _sluice_is_root; then
            echo "sluice: no Vulkan driver found; installing Mesa's lavapipe (mesa-vulkan-drivers)" >&2
            _sluice_apt_install mesa-vulkan-drivers
        else
            cat >&2 <<'MSG'
sluice: no Vulkan driver found (no ICD manifest in /usr/share/vulkan/icd.d or /etc/vulkan/icd.d).
        Install your GPU's Vulkan driver, or Mesa's CPU driver lavapipe as root:
            apt-get update && apt-get install -y mesa-vulkan-drivers
MSG
            return 1
        fi
    fi
    if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
        XDG_RUNTIME_DIR="$(mktemp -d)"
        SLUICE_CREATED_XDG_RUNTIME_DIR="$XDG_RUNTIME_DIR"
        export XDG_RUNTIME_DIR
    fi
}

sluice_pin_lavapipe() {
    if [ -n "${VK_ICD_FILENAMES:-}" ] || [ -n "${VK_DRIVER_FILES:-}" ]; then
        return 0
    fi
    local icds
    icds="$(_sluice_lavapipe_icds | paste -sd: -)"
    if [ -n "$icds" ]; then
        export VK_DRIVER_FILES="$icds"
    fi
}

# X11 libraries winit opens with dlopen (so the linker does not pull them in).
SLUICE_X11_PACKAGES=(xvfb xauth libx11-6 libx11-xcb1 libxcursor1 libxrandr2 libxi6 libxkbcommon-x11-0)

sluice_ensure_xvfb() {
    local missing=()
    local p
    for p in "${SLUICE_X11_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if _sluice_is_root && command -v apt-get >/dev/null 2>&1; then
        _sluice_apt_install "${missing[@]}"
    elif ! command -v xvfb-run >/dev/null 2>&1 && [ -z "${DISPLAY:-}" ]; then
        echo "sluice: the desktop app's smoke test needs X: as root run: apt-get install -y ${missing[*]}" >&2
        return 1
    fi
}

# Removes the XDG_RUNTIME_DIR that sluice_vulkan_setup created, if any (for an EXIT trap).
sluice_cleanup() {
    if [ -n "${SLUICE_CREATED_XDG_RUNTIME_DIR:-}" ]; then
        rm -rf -- "$SLUICE_CREATED_XDG_RUNTIME_DIR"
    fi
}
