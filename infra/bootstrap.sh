#!/usr/bin/env bash
# Bootstrap the box's Python environment: <workdir>/.venv with the project's dependencies
# (pyproject.toml: base + the trainer extra). Run from the project folder on the box:
#
#     bash infra/bootstrap.sh [--python PYTHON] [--extras trainer,eval] [--check]
#
# --extras: pyproject extras besides the base (default trainer; `launcher run` adds eval when the
# train config asks for a report card, eval.tasks).
# - If PYTHON already has torch (GPU images ship a CUDA build; so does the tests' box Python),
#   the venv sees PYTHON's packages (--system-site-packages, plus a .pth to PYTHON's own
#   site-packages when PYTHON is itself a venv) and that torch is kept: the rest is resolved
#   under a constraint pinning it ($VENV/llmbox-constraints.txt, pip -c / uv --constraint), so
#   the resolver picks accelerate, datasets and transformers releases that work with it and
#   downloads no torch and no CUDA wheel. A torch below the supported floor (pyproject.toml's
#   trainer extra) is refused in one line before anything is installed.
#   Otherwise torch is installed first, alone (PIP_FIND_LINKS / UV_FIND_LINKS are honoured).
# - It ends by saying how many MB it fetched and how long it took.
# - uv is used when present, else pip.
# - A stamp (hash of the requirements, PYTHON and this script) makes a second call a no-op.
#   --check only tests the stamp: exit 0 when up to date, 1 otherwise.
# Progress lines "::progress N/M what" feed the launcher's progress bar.
set -euo pipefail

PYTHON=python3
EXTRAS=trainer
CHECK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHON="$2"; shift 2 ;;
        --extras) EXTRAS="$2"; shift 2 ;;
        --check) CHECK=1; shift ;;
        *) echo "bootstrap: unknown argument $1" >&2; exit 2 ;;
    esac
done

VENV=.venv
STAMP="$VENV/.bootstrap-stamp"
STEPS=5
progress() { echo "::progress $1/$STEPS $2"; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "bootstrap: error: $PYTHON not found on $(hostname); set box.python in the config to an installed Python >= 3.10." >&2
    exit 3
fi
if [ ! -f pyproject.toml ] || [ ! -f infra/box_requirements.py ]; then
    echo "bootstrap: error: run from the project folder (pyproject.toml and infra/ missing in $(pwd)); launcher run syncs them." >&2
    exit 2
fi

REQS="$("$PYTHON" infra/box_requirements.py --extras "$EXTRAS")"
PYPATH="$(command -v "$PYTHON")"
HASH="$( { echo "$REQS"; echo "$PYPATH"; cat "$0"; } | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -x "$VENV/bin/python" ]; then
    [ "$CHECK" = 1 ] && exit 0
    progress $STEPS "up to date"
    echo "bootstrap: $VENV is up to date"
    exit 0
fi
[ "$CHECK" = 1 ] && exit 1

progress 1 "checking $PYTHON"
STARTED=$(date +%s)
read -r PY_FLOOR _ < <("$PYTHON" infra/box_requirements.py --range)
if "$PYTHON" -c "import sys; sys.exit(sys.version_info[:2] < tuple(map(int, '$PY_FLOOR'.split('.'))))"
then :; else
    echo "bootstrap: error: $PYTHON is $("$PYTHON" --version 2>&1); the trainer needs Python >= $PY_FLOOR. Set box.python." >&2
    exit 3
fi
# The image's torch, read from its metadata (importing torch takes seconds); refused below the floor.
IMAGE_TORCH="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
SYSTEM_TORCH=0
if [ -n "$IMAGE_TORCH" ]; then
    "$PYTHON" infra/box_requirements.py --check-torch "$IMAGE_TORCH" || exit 3
    SYSTEM_TORCH=1
    echo "bootstrap: keeping $PYTHON's torch $IMAGE_TORCH"
fi

USE_UV=0
if command -v uv >/dev/null 2>&1; then USE_UV=1; fi
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -z "${UV_FIND_LINKS:-}" ]; then export UV_FIND_LINKS="$PIP_FIND_LINKS"; fi

progress 2 "creating $VENV"
rm -f "$STAMP"
VENV_ARGS=()
[ "$SYSTEM_TORCH" = 1 ] && VENV_ARGS+=(--system-site-packages)
if [ ! -x "$VENV/bin/python" ]; then
    if [ "$USE_UV" = 1 ]; then
        uv venv -q --python "$PYTHON" "${VENV_ARGS[@]}" "$VENV"
    else
        "$PYTHON" -m venv "${VENV_ARGS[@]}" "$VENV"
    fi
fi
if [ "$SYSTEM_TORCH" = 1 ]; then
    # PYTHON may itself be a venv: --system-site-packages then reaches only its base Python,
    # so point the new venv at PYTHON's own site-packages too (after the venv's own).
    SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$PYTHON" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() if "site-packages" in p or "dist-packages" in p))' > "$SITE/_llmbox_base_site.pth"
fi

# What was fetched: pip's own lines (sizes of downloaded, cached and local files, summed by
# infra/fetch_summary.py); uv prints no sizes, so there the growth of its cache.
PIP_LOG="$VENV/.bootstrap-pip.log"
: > "$PIP_LOG"
cache_kb() { [ "$USE_UV" = 1 ] && du -sk "$(uv cache dir 2>/dev/null)" 2>/dev/null | cut -f1 || echo 0; }
CACHE_BEFORE=$(cache_kb)
install() {
    if [ "$USE_UV" = 1 ]; then
        uv pip install -q --python "$VENV/bin/python" "$@"
    else
        "$VENV/bin/python" -m pip install --progress-bar off --disable-pip-version-check "$@" >> "$PIP_LOG" \
            || { tail -n 30 "$PIP_LOG" >&2; return 1; }
    fi
}

progress 3 "installing torch"
if [ "$SYSTEM_TORCH" = 0 ]; then
    # alone and first: a range resolved together with the rest could pull other CUDA wheels
    install $("$PYTHON" infra/box_requirements.py --extras "$EXTRAS" --only torch)
fi
# Every later resolution keeps this torch.
CONSTRAINTS="$VENV/llmbox-constraints.txt"
echo "torch==$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')" > "$CONSTRAINTS"

progress 4 "installing the project's dependencies"
mapfile -t REQ_ARRAY < <(echo "$REQS")
install --constraint "$CONSTRAINTS" "${REQ_ARRAY[@]}"

"$VENV/bin/python" -c 'import torch, sentencepiece, numpy, safetensors, paramiko, boto3, yaml, pydantic' \
    || { echo "bootstrap: error: the venv cannot import the trainer's dependencies (see above)" >&2; exit 4; }
if [ "$USE_UV" = 1 ]; then
    FETCHED="$(( ($(cache_kb) - CACHE_BEFORE) / 1000 )) MB (uv's cache growth)"
else
    read -r MB FILES < <("$PYTHON" infra/fetch_summary.py "$PIP_LOG")
    FETCHED="$MB MB ($FILES packages)"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "bootstrap: installed into $VENV: $(cd "$SITE" && ls -d *.dist-info 2>/dev/null | sed 's/\.dist-info$//' | tr '\n' ' ')"
echo "bootstrap: fetched $FETCHED in $(( $(date +%s) - STARTED )) s"
echo "$HASH" > "$STAMP"
progress 5 "done"
echo "bootstrap: $VENV ready (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'), $([ "$USE_UV" = 1 ] && echo uv || echo pip))"
