# The SageMaker inference image: `docker run IMAGE serve` starts nginx on port 8080, buffering every request
# for gunicorn behind it on a unix socket (docs/operations.md, "The front").
# One image for CPU and GPU: PyPI's torch wheels carry their own CUDA libraries and fall back to the CPU.
#
# Build (BuildKit is required: the Dockerfile uses RUN --mount):
#   DOCKER_BUILDKIT=1 docker build -t clip-sagemaker:latest .
#   local_test/build_image.sh --help                 # the same, with the options below as flags
# Behind a TLS-intercepting proxy, pass its CA as a secret (mounted for the pip step only, never stored):
#   DOCKER_BUILDKIT=1 docker build --secret id=pipca,src=/etc/ssl/certs/ca-certificates.crt -t clip-sagemaker .
# Build arguments:
#   BASE_IMAGE            any Debian bookworm image (default debian:bookworm-slim)
#   TORCH_INDEX_URL       an extra pip index for torch/torchvision, e.g. https://download.pytorch.org/whl/cpu for
#                         a CPU-only image (much smaller); empty (default): PyPI's builds, which run on CPU and GPU
#   MODEL_DIR_IN_CONTEXT  a model directory inside the build context (open_clip_config.json + weights) to bake
#                         into the image at /opt/baked-model, for an image that starts without /opt/ml/model and
#                         without network; default: docker/no-baked-model, which holds no model
# Wheels in docker/wheels/ (empty in git) are installed without the index when they are all there; CI puts the
# host's wheels there. The directory is bind-mounted for the pip step only, never copied into the image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Debian bookworm fixes the versions (python3 is 3.11); apt-level pins would break with every point release.
# The user model-server (uid 1000) owns nothing: the image is read-only to it, and it writes only to /tmp.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates nginx-light \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && python3 -m venv /opt/venv \
    && groupadd --gid 1000 model-server \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin model-server

# The venv's python comes first on PATH (`serve` runs python3 from PATH), then `serve` itself; the rest is
# Debian's PATH, spelt out because an imported base image (docker import) may set none.
# HOME and every cache live under /tmp, so the container runs with --read-only --tmpfs /tmp.
ENV PATH="/opt/venv/bin:/opt/ml/code:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    TORCH_HOME=/tmp/.cache/torch \
    TRITON_CACHE_DIR=/tmp/.cache/triton

# Dependencies first (the big layer), so that code changes do not reinstall torch. When docker/wheels/ holds
# wheels (CI puts the host's there), pip first tries them alone, without the index; if they are not all there,
# or TORCH_INDEX_URL is set, pip installs from the index (PyPI), as it always does when the folder is empty.
ARG TORCH_INDEX_URL=""
COPY requirements.txt /opt/ml/code/requirements.txt
RUN --mount=type=secret,id=pipca \
    --mount=type=bind,source=docker/wheels,target=/mnt/wheels \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
    && set -- --no-cache-dir --disable-pip-version-check --progress-bar off -r /opt/ml/code/requirements.txt \
    && if [ -z "$TORCH_INDEX_URL" ] && ls /mnt/wheels/*.whl >/dev/null 2>&1 \
            && /opt/venv/bin/pip install --no-index --find-links /mnt/wheels "$@"; then \
         echo "installed from docker/wheels alone"; \
       else \
         /opt/venv/bin/pip install --find-links /mnt/wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "$@"; \
       fi

# An optional baked-in model (rarely changes, so before the code). Found when /opt/ml/model holds no model.
ARG MODEL_DIR_IN_CONTEXT=docker/no-baked-model
COPY ${MODEL_DIR_IN_CONTEXT} /opt/baked-model/

# The code last. `serve` runs the package next to it when there is no container/ directory beside it.
COPY serve /opt/ml/code/serve
COPY container/ /opt/ml/code/

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
# Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): the container speaks the /models API.
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true

# model-server, numeric so that "runs as non-root" checks can verify it without the image's /etc/passwd.
USER 1000:1000
EXPOSE 8080

# No ENTRYPOINT: SageMaker runs `docker run IMAGE serve`; `serve` supervises nginx and gunicorn and passes
# SIGTERM on to both (nginx first), exiting when either dies.
CMD ["serve"]
