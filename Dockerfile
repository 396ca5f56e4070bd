# monoserve: train -> export -> serve constrained networks. See docs/container.md.
#
#   docker build -t monoserve .                                       # CPU image (target runtime)
#   docker build --build-arg WHEELHOUSE=.wheelhouse -t monoserve .    # offline, from a wheelhouse
#   docker build --build-arg MODEL_REPOSITORY=model_repository -t monoserve .   # ship your models
#   docker build --target build -t monoserve-build .     # torch + `monoserve export` (compose `export`)
#   docker build --target runtime-gpu -t monoserve:gpu .  # onnxruntime-gpu on a CUDA base
#
# Stages: requirements -> serve-deps -> build (torch; trains/exports the default models)
#         serve-deps + build's wheel and models -> runtime;   build -> runtime-gpu.

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
# Package index for everything but torch, and torch's own index (its CPU build by default).
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A folder of wheels in the build context (scripts/container/wheelhouse.sh makes one). When it
# holds wheels, pip installs from it alone (--no-index): no network. Default: none given. It is
# bind-mounted, never copied into a layer; a changed wheelhouse with unchanged requirements
# reuses the cached layers (build with --no-cache to force).
ARG WHEELHOUSE=scripts/container/empty
# A model repository in the build context (NAME/VERSION/manifest.json) to bake in instead of
# training the default models. Default: none given.
ARG MODEL_REPOSITORY=scripts/container/empty

# ---------------------------------------------------------------------------------------------
# requirements: the dependency lists of pyproject.toml (core + serve, core + train + serve). The
# layers that install them are rebuilt only when these lists change, not on every code change.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml scripts/container/requirements.py /tmp/
RUN mkdir /requirements \
    && python3 /tmp/requirements.py --pyproject /tmp/pyproject.toml serve > /requirements/serve.txt \
    && python3 /tmp/requirements.py --pyproject /tmp/pyproject.toml train,serve > /requirements/train.txt

# ---------------------------------------------------------------------------------------------
# serve-deps: Python + a virtualenv (/opt/monoserve) with the serving dependencies only. The
# runtime is this stage plus the project's wheel and the models; the build stage extends it.
# The packages' own test suites (scipy's, numpy's: ~50 MB) are left out.
FROM ${PYTHON_IMAGE} AS serve-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PIP_INDEX_URL
ARG TORCH_INDEX_URL
ARG WHEELHOUSE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=requirements /requirements /usr/local/share/monoserve/requirements
RUN --mount=type=bind,source=${WHEELHOUSE},target=/wheelhouse \
    --mount=type=bind,source=scripts/container,target=/mnt/container \
    python3 -m venv /opt/monoserve \
    && /mnt/container/pip.sh /opt/monoserve/bin/python install -r /usr/local/share/monoserve/requirements/serve.txt \
    && find /opt/monoserve/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------
# build: serve-deps + torch (CPU build) + the training extras + the project. Trains and exports
# the default models, or takes the repository given at build time. Also the image of the compose
# `export` service (`monoserve export`, with torch); runs as root to write into the repository.
FROM serve-deps AS build
ARG PIP_INDEX_URL
ARG TORCH_INDEX_URL
ARG WHEELHOUSE
ARG MODEL_REPOSITORY
RUN --mount=type=bind,source=${WHEELHOUSE},target=/wheelhouse \
    --mount=type=bind,source=scripts/container,target=/mnt/container \
    /mnt/container/pip.sh --torch /opt/monoserve/bin/python install \
        "$(grep -E '^torch[^a-zA-Z0-9_.-]' /usr/local/share/monoserve/requirements/train.txt)" \
    && /mnt/container/pip.sh /opt/monoserve/bin/python install -r /usr/local/share/monoserve/requirements/train.txt

# The project as a wheel; the runtime installs the same wheel (no source tree at run time).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY models ./models
COPY export ./export
COPY service ./service
COPY monoserve ./monoserve
COPY torchref ./torchref
RUN --mount=type=bind,source=${WHEELHOUSE},target=/wheelhouse \
    --mount=type=bind,source=scripts/container,target=/mnt/container \
    /mnt/container/pip.sh /opt/monoserve/bin/python wheel --no-deps --wheel-dir /dist . \
    && /opt/monoserve/bin/python -m pip install --no-deps /dist/*.whl \
    && /opt/monoserve/bin/python -m pip check
ENV PATH=/opt/monoserve/bin:$PATH

# The model repository baked into the image: given (a folder of the build context holding
# NAME/VERSION/manifest.json) or, by default, trained and exported here from data/ (checkpoints
# kept in /src/build/default for the `export` service).
COPY data ./data
COPY ${MODEL_REPOSITORY} /tmp/given-repository
RUN --mount=type=bind,source=scripts/container,target=/mnt/container \
    MODEL_REPOSITORY="$MODEL_REPOSITORY" /mnt/container/build-models.sh \
        /tmp/given-repository /srv/model_repository /src/build/default \
    && rm -rf /tmp/given-repository

# ---------------------------------------------------------------------------------------------
# runtime-gpu: onnxruntime-gpu on a CUDA runtime base (CUDA 12 + cuDNN 9; Ubuntu's Python 3.12),
# from the package index (the wheelhouse holds the CPU image's Python 3.11 wheels). Not built or
# run by scripts/container-check: those machines have no GPU and cannot pull the CUDA image.
FROM ${CUDA_IMAGE} AS runtime-gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=requirements /requirements/serve.txt /tmp/serve.txt
COPY --from=build /dist /tmp/dist
# The serving requirements with onnxruntime swapped for onnxruntime-gpu (same version bounds).
RUN sed -i 's/^onnxruntime\([^a-zA-Z0-9_.-]\)/onnxruntime-gpu\1/' /tmp/serve.txt \
    && grep -q '^onnxruntime-gpu' /tmp/serve.txt \
    && python3 -m venv /opt/monoserve \
    && /opt/monoserve/bin/python -m pip install --index-url "$PIP_INDEX_URL" -r /tmp/serve.txt \
    && /opt/monoserve/bin/python -m pip install --no-deps /tmp/dist/*.whl \
    && /opt/monoserve/bin/python -m pip check \
    && rm -rf /tmp/dist /tmp/serve.txt
RUN groupadd --gid 10001 monoserve \
    && useradd --uid 10001 --gid monoserve --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --no-log-init monoserve
COPY --from=build /srv/model_repository /srv/model_repository
COPY scripts/container/healthcheck.py /usr/local/lib/monoserve/healthcheck.py
ENV PATH=/opt/monoserve/bin:$PATH \
    MALLOC_MMAP_THRESHOLD_=67108864 \
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MONOSERVE_REPO=/srv/model_repository \
    MONOSERVE_HOST=0.0.0.0 \
    MONOSERVE_PORT=8000 \
    MONOSERVE_GRPC_PORT=8001 \
    MONOSERVE_DEVICE=cuda
USER 10001:10001
WORKDIR /srv
# HTTP (REST, Open Inference Protocol REST) and gRPC (inference.GRPCInferenceService, grpc.health.v1).
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/monoserve/healthcheck.py"]
CMD ["monoserve", "serve"]

# ---------------------------------------------------------------------------------------------
# runtime (the default target): Python, onnxruntime, FastAPI, uvicorn and the service; no torch,
# no compilers. Runs as an unprivileged user; the model repository is read-only for it.
FROM serve-deps AS runtime
RUN groupadd --gid 10001 monoserve \
    && useradd --uid 10001 --gid monoserve --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --no-log-init monoserve
COPY --from=build /dist /tmp/dist
RUN /opt/monoserve/bin/python -m pip install --no-index --no-deps /tmp/dist/*.whl \
    && /opt/monoserve/bin/python -m pip check \
    && rm -rf /tmp/dist \
    && if /opt/monoserve/bin/python -c "import torch" 2>/dev/null; then \
           echo "torch in the runtime virtualenv" >&2; exit 1; fi
COPY --from=build /srv/model_repository /srv/model_repository
COPY scripts/container/healthcheck.py /usr/local/lib/monoserve/healthcheck.py
# glibc malloc thresholds: stable, faster handling of large request bodies (docs/container.md).
ENV PATH=/opt/monoserve/bin:$PATH \
    MALLOC_MMAP_THRESHOLD_=67108864 \
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MONOSERVE_REPO=/srv/model_repository \
    MONOSERVE_HOST=0.0.0.0 \
    MONOSERVE_PORT=8000 \
    MONOSERVE_GRPC_PORT=8001
USER 10001:10001
WORKDIR /srv
# HTTP (REST, Open Inference Protocol REST) and gRPC (inference.GRPCInferenceService, grpc.health.v1).
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/monoserve/healthcheck.py"]
# `monoserve serve` reads MONOSERVE_HOST, MONOSERVE_PORT, MONOSERVE_GRPC_PORT, MONOSERVE_REPO (and every other setting,
# MONOSERVE_LOG_LEVEL included) from the environment; no shell wrapper. It execs the server, which
# stays PID 1 and gets the signals (SIGTERM drains the requests and gRPC calls in flight).
CMD ["monoserve", "serve"]
