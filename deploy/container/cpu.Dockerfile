# syntax=docker/dockerfile:1
# corticast on CPU (ONNX Runtime): the shipped model meets its 3.6 ms budget on 2 cores.
# Build from the repository root (the context is the whole checkout, filtered by
# cpu.Dockerfile.dockerignore):
#   docker build -f deploy/container/cpu.Dockerfile -t corticast:cpu .
# Run with the host's network (LSL finds the rig by multicast) and a control token:
#   docker run --network host -e CORTICAST_API__TOKEN=... corticast:cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY models models
COPY firmware_bridge firmware_bridge
COPY bench bench
# The runtime only: the daemon never imports torch.
RUN python -m venv /opt/corticast \
 && /opt/corticast/bin/pip install . \
 && /opt/corticast/bin/corticast version

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/corticast /opt/corticast
COPY deploy/container/healthcheck.py /opt/corticast/healthcheck.py
# A working default (dry run, shipped model); mount the rig's own file over it.
COPY deploy/corticast.example.toml /etc/corticast/corticast.toml
# Its home is the state directory: audit log (relative path in the config) and caches.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/corticast --create-home \
        --shell /usr/sbin/nologin corticast \
 && chmod 0750 /var/lib/corticast
USER corticast:corticast
WORKDIR /var/lib/corticast
VOLUME ["/var/lib/corticast"]
ENV PATH=/opt/corticast/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CORTICAST_LOG_FORMAT=json
# API, ZeroMQ PUB and query (only reachable beyond loopback if the config binds them so).
EXPOSE 8080 5556 5557
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/corticast/bin/python", "/opt/corticast/healthcheck.py"]
# SIGTERM disarms, flushes the audit log and exits 0 (docker stop's default signal).
ENTRYPOINT ["corticast"]
CMD ["serve", "--config", "/etc/corticast/corticast.toml"]
