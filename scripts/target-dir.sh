#!/usr/bin/env bash
# Prints the directory cargo builds into: CARGO_TARGET_DIR, a build.target-dir from a
# cargo config, or ./target, as cargo itself resolves it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]*)".*/\1/'
