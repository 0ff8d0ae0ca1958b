#!/usr/bin/env bash
# Set up this machine (a laptop, a CI runner, or a box) to run the launcher, the trainer and
# the tests: system packages (openssh, tmux, rsync, screen) when we can install them, then the
# Python packages.
#
#   bash infra/setup.sh            # everything: launcher + trainer + test tools
#   EXTRAS=trainer bash infra/setup.sh   # without the test tools (and without the report card's lm-eval)
#
# torch: kept if already importable (GPU images ship a CUDA build); otherwise TORCH_SPEC is
# installed first and alone, so no later range pulls a different (CUDA) build.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-trainer,eval,dev}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"

missing=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v screen >/dev/null 2>&1 || missing+=(screen)  # the fallback when a box has no tmux (tests run both)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
  else
    echo "setup: please install these system packages first: ${missing[*]}" >&2
    exit 1
  fi
fi

# The interpreter itself, not a version manager's shim: pyenv's shim rehashes after every pip
# install and fails the install when its lock is held (or was left by a killed process).
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"
pip=("$PYTHON" -m pip install -q --disable-pip-version-check)
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing $TORCH_SPEC"
  "${pip[@]}" "$TORCH_SPEC"
fi
echo "setup: installing the project with extras [$EXTRAS]"
# resolved under a constraint pinning the torch now installed, as infra/bootstrap.sh does on a box:
# an unpinned range would otherwise upgrade it to the newest (CUDA) build
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PYTHON" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > "$constraints"
"${pip[@]}" --constraint "$constraints" -e ".[$EXTRAS]"
if command -v pyenv >/dev/null 2>&1 && ! pyenv rehash; then
  echo "setup: warning: 'pyenv rehash' failed (see above): if 'launcher' is not found, run 'pyenv rehash' again" >&2
fi
echo "setup: done. Next: 'launcher run' (the quickstart) or 'python3 -m pytest' (the tests)."
