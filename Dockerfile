# monoserve: train -> export -> serve constrained networks. See docs/container.md.
#
#   docker build -t monoserve .                                  # CPU image (target: runtime)
#   docker build --build-arg WHEELHOUSE=.wheelhouse -t monoserve .   # offline, from a wheelhouse
#   docker build --build-arg MODEL_REPOSITORY=model_repository -t monoserve .  # ship your models
#   docker build --target runtime-gpu -t monoserve:gpu .          # onnxruntime-gpu on CUDA
#   docker build --target build -t monoserve-build .              # torch + export CLI (compose `export`)

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# serve-deps: a virtualenv (/opt/monoserve) with the serving dependencies only, from the package
# index or, offline, from a wheelhouse. The runtime copies it; the build stage extends it.
FROM ${PYTHON_IMAGE} AS serve-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Package index for everything but torch, and torch's own index (its CPU build by default).
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A folder of wheels in the build context (scripts/container/wheelhouse.sh makes one): when it
# holds wheels, pip installs from it only (--no-index), with no network. Default: none given.
ARG WHEELHOUSE=scripts/container/empty
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_INDEX_URL=${PIP_INDEX_URL} \
    TORCH_INDEX_URL=${TORCH_INDEX_URL} \
    WHEELHOUSE=${WHEELHOUSE}
WORKDIR /src
COPY ${WHEELHOUSE} /wheelhouse
COPY scripts/container/requirements.py scripts/container/pip.sh scripts/container/build-models.sh /usr/local/lib/monoserve-build/
COPY pyproject.toml ./
# Dependencies before the project's code: cached until pyproject.toml or the wheelhouse changes.
RUN python3 /usr/local/lib/monoserve-build/requirements.py serve > /tmp/serve.txt \
    && python3 -m venv /opt/monoserve \
    && /usr/local/lib/monoserve-build/pip.sh /opt/monoserve/bin/python install -r /tmp/serve.txt

# ---------------------------------------------------------------------------------------------
# build: serve-deps + torch (CPU build) and the training extras + the project. Trains and exports
# the default models, or copies the repository given at build time. Also the image of the compose
# `export` service (monoserve export, torch).
FROM serve-deps AS build
RUN python3 /usr/local/lib/monoserve-build/requirements.py train,serve > /tmp/train.txt \
    && /usr/local/lib/monoserve-build/pip.sh --torch /opt/monoserve/bin/python install \
        "$(grep -E '^torch[^a-zA-Z0-9_.-]' /tmp/train.txt)" \
    && /usr/local/lib/monoserve-build/pip.sh /opt/monoserve/bin/python install -r /tmp/train.txt

# The project, as a wheel (the runtime installs the same wheel: no source tree at run time).
COPY README.md ./
COPY models ./models
COPY export ./export
COPY service ./service
COPY monoserve ./monoserve
RUN /usr/local/lib/monoserve-build/pip.sh /opt/monoserve/bin/python wheel --no-deps --wheel-dir /dist . \
    && /opt/monoserve/bin/python -m pip install --no-deps /dist/*.whl \
    && /opt/monoserve/bin/python -m pip check
ENV PATH=/opt/monoserve/bin:$PATH

# The model repository baked into the image: given (a folder of the build context holding
# NAME/VERSION/manifest.json) or, by default, trained and exported here from data/.
COPY data ./data
ARG MODEL_REPOSITORY=scripts/container/empty
ENV MODEL_REPOSITORY=${MODEL_REPOSITORY}
COPY ${MODEL_REPOSITORY} /tmp/given-repository
RUN /usr/local/lib/monoserve-build/build-models.sh /tmp/given-repository /srv/model_repository /src/build/default \
    && rm -rf /tmp/given-repository

# ---------------------------------------------------------------------------------------------
# runtime-gpu: onnxruntime-gpu on a CUDA runtime base (CUDA 12 + cuDNN 9, Python 3.12 from
# Ubuntu). Built from the package index (the wheelhouse is for the CPU image's Python 3.11).
# Not built or run by scripts/container-check: these machines have no GPU and no registry.
FROM ${CUDA_IMAGE} AS runtime-gpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=serve-deps /usr/local/lib/monoserve-build/requirements.py /tmp/requirements.py
COPY --from=serve-deps /src/pyproject.toml /tmp/pyproject.toml
COPY --from=build /dist /tmp/dist
# The serving requirements with onnxruntime swapped for onnxruntime-gpu (same version bounds).
RUN python3 /tmp/requirements.py --pyproject /tmp/pyproject.toml serve \
        | sed 's/^onnxruntime\([^a-zA-Z0-9_.-]\)/onnxruntime-gpu\1/' > /tmp/serve.txt \
    && grep -q '^onnxruntime-gpu' /tmp/serve.txt \
    && python3 -m venv /opt/monoserve \
    && /opt/monoserve/bin/python -m pip install --index-url "$PIP_INDEX_URL" -r /tmp/serve.txt \
    && /opt/monoserve/bin/python -m pip install --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist /tmp/*.txt /tmp/*.py /tmp/pyproject.toml
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
    MONOSERVE_DEVICE=cuda
USER 10001:10001
WORKDIR /srv
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/monoserve/healthcheck.py"]
# Bind address and port are command-line options of `monoserve serve`; the image takes them from
# MONOSERVE_HOST and MONOSERVE_PORT like every other setting (exec: the server is PID 1).
CMD ["/bin/sh", "-c", "exec monoserve --log-level \"${MONOSERVE_LOG_LEVEL:-INFO}\" serve --host \"${MONOSERVE_HOST:-0.0.0.0}\" --port \"${MONOSERVE_PORT:-8000}\""]

# ---------------------------------------------------------------------------------------------
# runtime (the default target): Python, onnxruntime, FastAPI, uvicorn and the service. No torch,
# no compilers. Runs as an unprivileged user; the model repository is read-only for it.
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 monoserve \
    && useradd --uid 10001 --gid monoserve --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --no-log-init monoserve
COPY --from=serve-deps /opt/monoserve /opt/monoserve
COPY --from=build /dist /tmp/dist
RUN /opt/monoserve/bin/python -m pip install --no-index --no-deps /tmp/dist/*.whl \
    && /opt/monoserve/bin/python -m pip check \
    && rm -rf /tmp/dist \
    && if /opt/monoserve/bin/python -c "import torch" 2>/dev/null; then \
           echo "torch in the runtime virtualenv" >&2; exit 1; fi
COPY --from=build /srv/model_repository /srv/model_repository
COPY scripts/container/healthcheck.py /usr/local/lib/monoserve/healthcheck.py
# glibc malloc tuning: stable, faster handling of large request bodies (see docs/container.md).
ENV PATH=/opt/monoserve/bin:$PATH \
    MALLOC_MMAP_THRESHOLD_=67108864 \
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MONOSERVE_REPO=/srv/model_repository \
    MONOSERVE_HOST=0.0.0.0 \
    MONOSERVE_PORT=8000
USER 10001:10001
WORKDIR /srv
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/monoserve/healthcheck.py"]
# Bind address and port are command-line options of `monoserve serve`; the image takes them from
# MONOSERVE_HOST and MONOSERVE_PORT like every other setting (exec: the server is PID 1).
CMD ["/bin/sh", "-c", "exec monoserve --log-level \"${MONOSERVE_LOG_LEVEL:-INFO}\" serve --host \"${MONOSERVE_HOST:-0.0.0.0}\" --port \"${MONOSERVE_PORT:-8000}\""]
