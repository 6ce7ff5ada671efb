#!/usr/bin/env bash
# The GPU path in one short run (docs/gpu-check.md): loads a random full-size ViT-B-32 through the production
# loader in fp16 on CUDA, checks it against fp32, measures the in-process limit (decode on every core, fp16
# forward at its best batch) and ./serve at concurrency 64, and prints one table. At most 5 minutes.
#
#   bash local_test/gpu_check.sh                 on a GPU machine with torch + torchvision and no package index;
#                                                the other dependencies come from local_test/gpu_wheels/
#   bash local_test/gpu_check.sh --fetch-wheels  here (index reachable): fill local_test/gpu_wheels/
#   bash local_test/gpu_check.sh --dry-run       CPU only, tiny model, the checkout's .venv (CI), ~1 minute
#
# Environment: PYTHON (the GPU machine's interpreter; default /opt/torch/.venv/bin/python3, else python3),
# GPU_CHECK_WHEELS (the wheel folder), GPU_CHECK_TIMEOUT (seconds for the whole run: 300, dry run 120).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
wheels="${GPU_CHECK_WHEELS:-$here/local_test/gpu_wheels}"
check="$here/local_test/gpu_check.py"
venv_py="$here/.venv/bin/python"

die() { echo "gpu_check: $*" >&2; exit 1; }

fetch_wheels() {
  [ -x "$venv_py" ] || die "--fetch-wheels reads the versions from the checkout's .venv; there is none at $here/.venv"
  mkdir -p "$wheels"
  rm -f "$wheels"/*.whl
  "$venv_py" "$check" wheel-list > "$wheels/requirements.txt"
  # --no-deps: the list is the whole closure already (torch and torchvision excluded: the machine's).
  # manylinux_2_28 is safe: torch's own CUDA wheels need glibc 2.28.
  "$venv_py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -r "$wheels/requirements.txt" -d "$wheels"
  count=$(ls "$wheels"/*.whl | wc -l)
  size=$(du -cb "$wheels"/*.whl | tail -1 | cut -f1)
  echo "gpu_check: $count wheels, $((size / 1024 / 1024)) MiB in $wheels"
  [ "$size" -le $((64 * 1024 * 1024)) ] || die "the wheels take more than 64 MiB"
  # A trial install, where a CPython 3.12 is at hand: offline, and every requirement met but torch's.
  py312=""
  for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if "$candidate" -c "" 2>/dev/null; then py312="$candidate"; break; fi
  done
  if [ -n "$py312" ]; then
    trial="$(mktemp -d)"
    trap 'rm -rf "$trial"' RETURN
    "$py312" "$check" install-wheels "$wheels" "$trial/site"
    PYTHONPATH="$trial/site" "$py312" -c "
import importlib.util, flask, gunicorn, orjson, ftfy, regex, PIL, numpy, safetensors, huggingface_hub, werkzeug, boto3
assert importlib.util.find_spec('open_clip'), 'open_clip is not installed'
try:
    import torch
except ImportError:
    print('gpu_check: trial install under', __import__('sys').version.split()[0], 'imports flask, gunicorn, orjson, ...; '
          'open_clip is installed but not imported (no torch for this python here)')
else:
    import open_clip
    print('gpu_check: trial install imports open_clip, flask, gunicorn, orjson')
"
  else
    echo "gpu_check: no python3.12 here: the wheels were not trial-installed"
  fi
}

case "${1:-}" in
  --fetch-wheels)
    fetch_wheels
    exit 0 ;;
  --dry-run)
    [ -x "$venv_py" ] || die "--dry-run uses the checkout's .venv; there is none at $here/.venv"
    exec timeout -k 10 "${GPU_CHECK_TIMEOUT:-120}" "$venv_py" "$check" run --dry-run ;;
  "") ;;
  -h|--help)
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  *) die "unknown argument $1 (see --help)" ;;
esac

budget="${GPU_CHECK_TIMEOUT:-300}"
start=$SECONDS
py="${PYTHON:-/opt/torch/.venv/bin/python3}"
if [ ! -x "$py" ]; then py="$(command -v python3)" || die "no python3"; fi
"$py" -c "import torch, torchvision" || die "$py cannot import torch and torchvision"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
if compgen -G "$wheels/*.whl" > /dev/null; then
  timeout -k 5 180 "$py" "$check" install-wheels "$wheels" "$scratch/site"
  export PYTHONPATH="$scratch/site${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$py" -c "import open_clip, flask, gunicorn, orjson, ftfy" 2>/dev/null; then
  die "no wheels in $wheels, and $py lacks open_clip/flask/gunicorn/orjson/ftfy: run --fetch-wheels where an index is"
fi
"$py" -c "import open_clip, flask, gunicorn, orjson, ftfy" || die "the installed wheels do not import"
left=$((budget - (SECONDS - start)))
[ "$left" -gt 60 ] || die "only $left s left of $budget s after installing"
export PYTHON="$py"
timeout -k 20 "$left" "$py" "$check" run --work-dir "$scratch/work"
