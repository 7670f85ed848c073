# syntax=docker/dockerfile:1
# The pinned GPU environment for swehero: training (Megatron-Core + Transformer Engine), serving (vLLM) and
# evaluation (SWE-bench harness). Build: `docker build -t swehero .`; see docs/gpu-image.md.
#
# Base: NVIDIA's PyTorch image (CUDA, cuDNN, NCCL, torch and Transformer Engine built together, Python 3.12),
# pinned by tag and digest (the linux/amd64 digest; check with `docker buildx imagetools inspect`).
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:26.06-py3@sha256:43c018d6a12963f1a1bad85ef8574b5c2a978eec2be0ebcacfb87f69e0d210e1

# Versions installed below; tests/test_docker_pins.py fails if they drift from setup.cfg or the lock files.
ARG MEGATRON_CORE_VERSION=0.19.2
ARG VLLM_VERSION=0.32.0
ARG SWEBENCH_VERSION=5.0.2
ARG DOCKER_SDK_VERSION=7.2.0

# ---- the base image with pip unconstrained. NVIDIA's PyTorch images (25.03 on) set PIP_CONSTRAINT to
# /etc/pip/constraint.txt, which pins every package they ship, torch included: neither vLLM's torch==2.13.0 nor
# docker/train.lock's versions install under it, and once they are installed its pins no longer describe the image.
# Megatron-LM clears it too (docs/get-started/install.md; docker/Dockerfile.ci.dev, on this base image).
FROM ${BASE_IMAGE} AS base
ENV PIP_CONSTRAINT=""

# ---- vLLM in its own environment: vLLM pins torch==2.13.0 and would otherwise replace the base image's torch,
# which Transformer Engine is compiled against. `swehero serve` runs $SWEHERO_VLLM_PYTHON.
FROM base AS vllm
ARG VLLM_VERSION
COPY docker/vllm.lock /tmp/vllm.lock
RUN python -m venv /opt/vllm \
 && /opt/vllm/bin/pip install --no-cache-dir -r /tmp/vllm.lock "vllm==${VLLM_VERSION}" \
 && /opt/vllm/bin/python -c "import vllm; assert vllm.__version__ == '${VLLM_VERSION}', vllm.__version__"

# ---- the training / evaluation environment on the base image's Python, torch and Transformer Engine.
FROM base
ARG MEGATRON_CORE_VERSION
ARG SWEBENCH_VERSION
ARG DOCKER_SDK_VERSION
# the commit this is built from (docs/gpu-image.md); left empty, manifests record no commit rather than a made-up one
ARG SWEHERO_GIT_COMMIT=

# Ubuntu's archive drops superseded package versions, so exact apt pins would break rebuilds; the base image's
# digest already fixes the distribution release these come from. docker.io for its `docker` command alone: swebench's
# harness stops and removes each container it grades in with it (the engine is the host's, through its socket).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap docker.io git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/swehero
COPY docker/train.lock docker/train.lock
RUN pip install --no-cache-dir -c docker/train.lock \
      "megatron-core==${MEGATRON_CORE_VERSION}" "swebench==${SWEBENCH_VERSION}" "docker==${DOCKER_SDK_VERSION}"
COPY . .
RUN pip install --no-cache-dir -c docker/train.lock ".[gpu,eval]" \
 && python -c "import megatron.core, transformer_engine.pytorch, swebench, docker, swehero"
COPY --from=vllm /opt/vllm /opt/vllm

# Ubuntu 24.04 images (NGC's since 24.xx) already hold a user at uid 1000 (`ubuntu`): useradd would refuse the uid
RUN if id 1000 >/dev/null 2>&1; then userdel --remove "$(id -un 1000)"; fi \
 && useradd --create-home --uid 1000 swehero && mkdir -p /workspace && chown swehero /workspace
USER 1000
WORKDIR /workspace
ENV SWEHERO_VLLM_PYTHON=/opt/vllm/bin/python \
    SWEHERO_GIT_COMMIT=${SWEHERO_GIT_COMMIT} \
    PYTHONUNBUFFERED=1

HEALTHCHECK --interval=5m --timeout=30s CMD ["swehero", "--version"]
ENTRYPOINT ["swehero"]
CMD ["--help"]
