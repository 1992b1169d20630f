#!/usr/bin/env bash
# Regenerate the Yocto layer's generated files (the crates include from Cargo.lock, the
# per-board sysctl and watchdog files from board/*.json). Run after changing dependencies
# or a board profile; tests/yocto_layer.rs fails until you do.
set -euo pipefail
cd "$(dirname "$0")/.."
QUOLL_UPDATE_YOCTO=1 cargo test -q --test yocto_layer
git status --short yocto/
