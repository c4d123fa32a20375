#!/usr/bin/env bash
# Builds the browser demo into web/dist/: the sluice-web crate for wasm32, wasm-bindgen's
# `--target web` glue (dist/pkg/), the static page and worker, and the demo model
# (dist/demo-model/). Installs the wasm32 target and the wasm-bindgen CLI matching
# Cargo.lock when missing. With SLUICE_WASM_OPT=1 it also runs binaryen's `wasm-opt -O` (not by
# default: Debian's binaryen 108 produced a module whose externref table fails to initialise,
# "WebAssembly.Table.set(): Argument 1 is invalid for table").
#
#   web/build.sh            the `web` profile (default; what the page ships: built for size,
#                           no symbol names — see Cargo.toml)
#   web/build.sh --dev      dev profile (debug assertions on; for working on the page)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
  --dev) profile=dev ;;
  --release | "") profile=release ;;
  *) echo "usage: web/build.sh [--release|--dev]" >&2; exit 2 ;;
esac

export PATH="$HOME/.cargo/bin:$PATH"
target_dir="${CARGO_TARGET_DIR:-target}"
dist=web/dist

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "web/build.sh: installing the wasm32-unknown-unknown target" >&2
  rustup target add wasm32-unknown-unknown
fi

# The CLI must be the exact version of the wasm-bindgen crate in Cargo.lock.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
  echo "web/build.sh: installing wasm-bindgen-cli $want (found: ${have:-none})" >&2
  # Not --locked: a dependency pinned in its lockfile is missing from the registry here.
  cargo install wasm-bindgen-cli --version "$want"
fi

t0=$(date +%s)
if [[ $profile == release ]]; then
  cargo build -p sluice-web --lib --target wasm32-unknown-unknown --profile web
  out_dir=web
else
  cargo build -p sluice-web --lib --target wasm32-unknown-unknown
  out_dir=debug
fi
echo "web/build.sh: cargo build ($profile) took $(( $(date +%s) - t0 )) s" >&2

wasm="$target_dir/wasm32-unknown-unknown/$out_dir/sluice_web.wasm"
rm -rf "$dist"
mkdir -p "$dist/pkg" "$dist/demo-model"
# The symbol-name and producers sections only help debuggers; the page never needs them.
strip_args=()
if [[ $profile == release ]]; then strip_args=(--remove-name-section --remove-producers-section); fi
wasm-bindgen --target web --no-typescript "${strip_args[@]}" --out-dir "$dist/pkg" "$wasm"
bg="$dist/pkg/sluice_web_bg.wasm"
size() { stat -c %s "$1"; }
echo "web/build.sh: $bg: $(size "$bg") bytes after wasm-bindgen ($profile)" >&2
if [[ "${SLUICE_WASM_OPT:-0}" == 1 ]] && command -v wasm-opt >/dev/null; then
  wasm-opt -O --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types "$bg" -o "$bg.opt"
  mv "$bg.opt" "$bg"
  echo "web/build.sh: $bg: $(size "$bg") bytes after wasm-opt -O" >&2
else
  echo "web/build.sh: wasm-opt not run (SLUICE_WASM_OPT=1 runs it when installed)" >&2
fi

cp web/static/index.html web/static/main.js web/static/chart.js web/static/worker.js "$dist/"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  if [[ -f "assets/demo-model/$f" ]]; then cp "assets/demo-model/$f" "$dist/demo-model/"; fi
done
echo "web/build.sh: built $dist ($(du -sh "$dist" | cut -f1)); serve it over http, e.g. python3 -m http.server -d $dist" >&2
