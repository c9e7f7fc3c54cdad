#!/usr/bin/env bash
# Set up a machine for lightning_track's tests: the system parts in scripts/system-packages.txt (on
# Debian/Ubuntu, as root or through sudo, when any is missing), then torch (the CPU build) and the
# package with its test extras. Elsewhere the system parts are left alone with one line saying so, and
# the tests that need them are skipped by name. With CI=true a part that cannot be installed fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
list=scripts/system-packages.txt
search="$PATH:/usr/sbin:/sbin"

have() {  # have "a|b": any of the alternatives on PATH (or in sbin)
  local alt
  for alt in ${1//|/ }; do PATH="$search" command -v "$alt" >/dev/null 2>&1 && return 0; done
  return 1
}

missing_parts=() packages=()
while read -r part commands pkgs; do
  [[ -z "$part" || "$part" == \#* ]] && continue
  for cmd in ${commands//,/ }; do
    if ! have "$cmd"; then missing_parts+=("$part"); read -ra more <<<"$pkgs"; packages+=("${more[@]}"); break; fi
  done
done <"$list"

if ((${#missing_parts[@]})); then
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
  else sudo=(none); fi
  if command -v apt-get >/dev/null && [ "${sudo[0]:-}" != none ]; then
    echo "setup: installing ${packages[*]} (for ${missing_parts[*]})"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
  elif [ "${CI:-}" = true ]; then
    echo "setup: cannot install ${missing_parts[*]} (needs apt-get and root or sudo); CI runs every test" >&2
    exit 1
  else
    echo "setup: ${missing_parts[*]} not installed and not installable here (needs apt-get and root or sudo):" \
         "their tests will be skipped; to install: sudo apt-get install ${packages[*]}" >&2
  fi
fi

pip install -q torch==2.13.0
pip install -q -e ".[test,hf]"

# The MLflow tracking server the export tests start: a team's server, not a dependency of an export (the
# client is mlflow-skinny). Full mlflow, of the client's version, goes into its own folder so that its
# scientific stack stays out of the training environment (with scipy installed, every `import lightning`
# takes ~0.6 s more: torchmetrics imports scipy.signal).
version=$(python -c 'import importlib.metadata as m; print(m.version("mlflow-skinny"))')
if [ ! -f ".mlflow-server/.mlflow-$version" ]; then
  rm -rf .mlflow-server
  pip install -q --no-warn-conflicts --no-warn-script-location --target .mlflow-server "mlflow==$version"
  touch ".mlflow-server/.mlflow-$version"
fi
