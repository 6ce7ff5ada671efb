# The SageMaker inference image: `docker run IMAGE serve` starts gunicorn on port 8080 (README.md).
#
# Build (BuildKit is required for the secret mount; the secret is only needed behind a TLS-intercepting proxy):
#   DOCKER_BUILDKIT=1 docker build -t clip-sagemaker:latest .
#   DOCKER_BUILDKIT=1 docker build --secret id=pipca,src=/etc/ssl/certs/ca-certificates.crt -t clip-sagemaker:latest .
# Build args:
#   BASE_IMAGE       any Debian bookworm image (default debian:bookworm-slim)
#   TORCH_INDEX_URL  an extra pip index for torch/torchvision, e.g. https://download.pytorch.org/whl/cpu for a
#                    CPU-only image (much smaller); empty (default) takes the PyPI builds, which run on CPU and GPU.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=""

# Debian bookworm pins the versions (python3 is 3.11); apt-level pins would break with every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# Dependencies first, so that code changes do not reinstall torch.
COPY requirements.txt /opt/ml/code/requirements.txt
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -r /opt/ml/code/requirements.txt

# `serve` runs the package next to it when there is no container/ directory beside it.
COPY container/ /opt/ml/code/
COPY serve /opt/ml/code/serve
RUN chmod 0755 /opt/ml/code/serve \
    && groupadd --gid 1000 model-server \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin model-server

# The venv's python comes first on PATH: `serve` uses $PYTHON, else python3 on PATH.
# Only /tmp is written to at run time (caches included), so the container runs with --read-only --tmpfs /tmp.
ENV PATH="/opt/venv/bin:/opt/ml/code:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    TORCH_HOME=/tmp/.cache/torch

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

# model-server, numeric so that "runs as non-root" checks can verify it without the image's /etc/passwd.
USER 1000:1000
EXPOSE 8080

# No ENTRYPOINT: SageMaker runs `docker run IMAGE serve`, and `serve` execs gunicorn, which receives SIGTERM.
CMD ["serve"]
