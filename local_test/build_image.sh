#!/usr/bin/env bash
# Builds the SageMaker image from the repository's Dockerfile (BuildKit), optionally CPU-only or with a model
# baked in.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: local_test/build_image.sh [--tag IMAGE] [--cpu-only | --torch-index-url URL] [--base-image IMAGE]
                                 [--bake-model DIR] [--pip-ca FILE] [-- EXTRA_DOCKER_BUILD_ARGS...]

Builds the inference image from the repository's Dockerfile:
  DOCKER_BUILDKIT=1 docker build [--build-arg ...] -t IMAGE REPO

  --tag IMAGE            image name (default: clip-sagemaker:latest, or clip-sagemaker:cpu with --cpu-only)
  --cpu-only             take torch and torchvision from the PyTorch CPU wheel index
                         (https://download.pytorch.org/whl/cpu): a much smaller image that runs on CPUs only.
                         The index must be reachable from the build. Default: PyPI's torch, which carries its
                         own CUDA libraries, so that one image runs on CPU and GPU (several GB).
  --torch-index-url URL  another extra pip index for torch/torchvision (the build argument TORCH_INDEX_URL)
  --base-image IMAGE     another Debian bookworm base image (default: debian:bookworm-slim)
  --bake-model DIR       bake the model directory DIR (open_clip_config.json + open_clip_model.safetensors, as
                         local_test/make_model.sh writes it) into the image at /opt/baked-model: the container
                         then starts without /opt/ml/model and without network. DIR is staged into the build
                         context (docker/bake-staging/, hard links where possible) and removed afterwards.
  --pip-ca FILE          a CA bundle pip must trust (behind a TLS-intercepting proxy), passed as the build
                         secret pipca: mounted for the pip step only, never stored in the image
  -h, --help             show this help

Arguments after `--` go to `docker build`, e.g. `-- --platform linux/amd64 --no-cache`.
Set DOCKER to use another docker client (default: docker on PATH; it needs BuildKit).

Examples:
  local_test/build_image.sh                                  # clip-sagemaker:latest, CPU and GPU
  local_test/build_image.sh --cpu-only                       # clip-sagemaker:cpu
  local_test/build_image.sh --bake-model model/ --tag clip-sagemaker:vit-b-32
USAGE
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
docker="${DOCKER:-docker}"
tag=""
torch_index=""
base_image=""
bake_dir=""
pip_ca=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --cpu-only) torch_index="https://download.pytorch.org/whl/cpu"; shift ;;
    --torch-index-url) torch_index="${2:?--torch-index-url needs a value}"; shift 2 ;;
    --base-image) base_image="${2:?--base-image needs a value}"; shift 2 ;;
    --bake-model) bake_dir="${2:?--bake-model needs a value}"; shift 2 ;;
    --pip-ca) pip_ca="${2:?--pip-ca needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build_image.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -z "$tag" ]; then
  if [ "$torch_index" = "https://download.pytorch.org/whl/cpu" ]; then tag="clip-sagemaker:cpu"; else tag="clip-sagemaker:latest"; fi
fi
args=(build)
[ -n "$torch_index" ] && args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
[ -n "$base_image" ] && args+=(--build-arg "BASE_IMAGE=$base_image")
if [ -n "$pip_ca" ]; then
  [ -f "$pip_ca" ] || { echo "build_image.sh: --pip-ca $pip_ca is not a file" >&2; exit 2; }
  args+=(--secret "id=pipca,src=$(cd "$(dirname "$pip_ca")" && pwd)/$(basename "$pip_ca")")
fi

staging="$repo/docker/bake-staging"
if [ -n "$bake_dir" ]; then
  if [ ! -f "$bake_dir/open_clip_config.json" ] || ! ls "$bake_dir"/open_clip_*model.* >/dev/null 2>&1; then
    echo "build_image.sh: --bake-model $bake_dir does not hold open_clip_config.json and open_clip_model.safetensors" \
         "(or open_clip_pytorch_model.bin); make one with local_test/make_model.sh" >&2
    exit 2
  fi
  rm -rf "$staging"
  trap 'rm -rf "$staging"' EXIT
  mkdir -p "$staging"
  # Hard links cost no space; another file system gets a copy. Readable by the image's non-root user.
  cp -al "$bake_dir"/. "$staging"/ 2>/dev/null || cp -a "$bake_dir"/. "$staging"/
  chmod -R a+rX "$staging"
  args+=(--build-arg "MODEL_DIR_IN_CONTEXT=docker/bake-staging")
fi
args+=("${extra[@]}" -t "$tag" "$repo")

echo "+ DOCKER_BUILDKIT=1 $docker ${args[*]}" >&2
DOCKER_BUILDKIT=1 "$docker" "${args[@]}"
echo "built $tag ($("$docker" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1 / 1e9}'))" >&2
