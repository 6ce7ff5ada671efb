#!/usr/bin/env bash
# Writes a model directory (and model.tar.gz) in the layout the container loads from /opt/ml/model.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: local_test/make_model.sh MODEL [--checkpoint FILE] [--config FILE.json] [--out DIR] [--tar FILE | --no-tar]

Writes an OpenCLIP model directory (open_clip_config.json + open_clip_model.safetensors), the layout the
container loads from /opt/ml/model, and packs it as model.tar.gz for SageMaker's ModelDataUrl. A wrapper of
`python -m clip_sagemaker.model_files` (see README.md).

  MODEL               ARCH:TAG    an open_clip architecture and pretrained tag, e.g. ViT-B-32:laion2b_s34b_b79k
                                  (the weights are downloaded: this needs network);
                      ARCH        with --checkpoint: an architecture whose weights are in FILE;
                      ARCH, ARCH:none
                                  without --checkpoint: seeded random weights (tests and benchmarks only;
                                  the directory records that they are random, and serving it says so)
  --checkpoint FILE   an open_clip checkpoint file (.safetensors, .bin, .pt, .pth) for ARCH: works offline
  --config FILE.json  an open_clip model config defining the architecture ARCH (for new architectures)
  --out DIR           model directory to write (default: model/ in the repository)
  --tar FILE          model.tar.gz to write (default: model.tar.gz next to DIR)
  --no-tar            write only the directory
  -h, --help          show this help

Then: local_test/serve_local.sh --model-dir DIR (Docker), MODEL_DIR=DIR ./serve (no Docker),
local_test/build_image.sh --bake-model DIR (an image that starts offline), or
aws s3 cp model.tar.gz s3://BUCKET/clip/model.tar.gz for SageMaker.
Uses the repository's .venv when there is one, else $PYTHON, else python3.

Examples:
  local_test/make_model.sh ViT-B-32:laion2b_s34b_b79k
  local_test/make_model.sh ViT-B-32 --checkpoint ~/ckpt/vit-b-32.safetensors --out /srv/models/b32
USAGE
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model=""
checkpoint=""
config=""
out="$repo/model"
tar=""
no_tar=0
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) checkpoint="${2:?--checkpoint needs a value}"; shift 2 ;;
    --config) config="${2:?--config needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --tar) tar="${2:?--tar needs a value}"; shift 2 ;;
    --no-tar) no_tar=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "make_model.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$model" ] || { echo "make_model.sh: more than one MODEL: $model, $1" >&2; exit 2; }
       model="$1"; shift ;;
  esac
done
if [ -z "$model" ]; then
  echo "make_model.sh: MODEL is required (ARCH:TAG, ARCH with --checkpoint, or ARCH for random weights)" >&2
  usage >&2
  exit 2
fi

arch="${model%%:*}"
tag=""
[ "$arch" != "$model" ] && tag="${model#*:}"
if [ -n "$checkpoint" ] && [ -n "$tag" ]; then
  echo "make_model.sh: give either ARCH:TAG or ARCH with --checkpoint, not both" >&2
  exit 2
fi
if [ -n "$checkpoint" ] && [ ! -f "$checkpoint" ]; then
  echo "make_model.sh: --checkpoint $checkpoint: no such file" >&2
  exit 2
fi

args=("$arch" --out "$out")
if [ -n "$checkpoint" ]; then
  args+=(--pretrained "$checkpoint")
elif [ -n "$tag" ] && [ "$tag" != "none" ]; then
  args+=(--pretrained "$tag")
fi
[ -n "$config" ] && args+=(--config "$config")
if [ "$no_tar" = 0 ]; then
  args+=(--tar "${tar:-$(dirname "$out")/model.tar.gz}")
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$repo/container${PYTHONPATH:+:$PYTHONPATH}"
echo "+ $python -m clip_sagemaker.model_files ${args[*]}" >&2
"$python" -m clip_sagemaker.model_files "${args[@]}"
# The image runs as a non-root user: a directory mounted at /opt/ml/model must be readable by it.
chmod -R a+rX "$out"
