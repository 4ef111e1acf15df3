# syntax=docker/dockerfile:1
# corticast on an NVIDIA GPU: TensorRT (engines cached in the state volume), ONNX Runtime CUDA.
# Build from the repository root (context filtered by gpu.Dockerfile.dockerignore):
#   docker build -f deploy/container/gpu.Dockerfile -t corticast:gpu .
# Run with the NVIDIA Container Toolkit, the host's network (LSL multicast) and a token:
#   docker run --gpus all --network host -e CORTICAST_API__TOKEN=... corticast:gpu
#
# The base is NVIDIA's CUDA + cuDNN runtime image, which ONNX Runtime's CUDA provider needs;
# the TensorRT runtime (libnvinfer) comes with the `gpu` extra's tensorrt wheels, the only
# TensorRT build whose Python bindings match corticast's Python 3.11 (the Ubuntu images carry
# 3.10 or 3.12). Python 3.11 is uv's relocatable CPython build.
# One CUDA major, 12, here and in the `gpu` extra (pyproject.toml says why each pin): the
# image's CUDA 12.6 + cuDNN 9 serve onnxruntime-gpu 1.20-1.26 (1.27+ on PyPI are CUDA 13 and
# would fall back to the CPU here), tensorrt-cu12 10.x and cuda-python 12.x. A driver >= 560
# runs it. gpu_check.py fails the build when any part is built for another major or a
# provider library cannot resolve its dependencies.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.0

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN uv python install 3.11 \
 && uv venv --seed --python 3.11 /opt/corticast
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY models models
COPY firmware_bridge firmware_bridge
COPY bench bench
COPY deploy/container/gpu_check.py /opt/corticast/gpu_check.py
# TensorRT's wheel keeps libnvinfer in its own package directory; ORT's TensorRT provider
# finds it by name, so that directory is on the library path (gpu_check.py's ldd proves it).
ENV LD_LIBRARY_PATH=/opt/corticast/lib/python3.11/site-packages/tensorrt_libs:${LD_LIBRARY_PATH}
# onnxruntime-gpu provides the same `onnxruntime` module as the CPU wheel that the base
# dependencies pull in: remove both, then install the GPU wheel alone (ONNX Runtime's advice),
# at the gpu extra's pin (read from pyproject.toml, so it is written once).
RUN /opt/corticast/bin/pip install ".[gpu]" \
 && ORT_GPU="$(/opt/corticast/bin/python /opt/corticast/gpu_check.py --ort-requirement pyproject.toml)" \
 && /opt/corticast/bin/pip uninstall --yes onnxruntime onnxruntime-gpu \
 && /opt/corticast/bin/pip install "$ORT_GPU" \
 && /opt/corticast/bin/python /opt/corticast/gpu_check.py \
 && /opt/corticast/bin/corticast version

FROM ${CUDA_IMAGE}
# The venv's interpreter is a link into /opt/python: both keep their paths.
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/corticast /opt/corticast
COPY deploy/container/healthcheck.py /opt/corticast/healthcheck.py
COPY deploy/corticast.example.toml /etc/corticast/corticast.toml
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/corticast --create-home \
        --shell /usr/sbin/nologin corticast \
 && chmod 0750 /var/lib/corticast
USER corticast:corticast
WORKDIR /var/lib/corticast
# TensorRT engines are cached under ~/.cache/corticast/engines: keep the volume, or every
# start rebuilds them (minutes).
VOLUME ["/var/lib/corticast"]
ENV PATH=/opt/corticast/bin:$PATH \
    LD_LIBRARY_PATH=/opt/corticast/lib/python3.11/site-packages/tensorrt_libs:${LD_LIBRARY_PATH} \
    PYTHONUNBUFFERED=1 \
    CORTICAST_LOG_FORMAT=json \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8080 5556 5557
# On the target host, prove the providers load and run on its GPU before serving:
#   docker run --rm --gpus all --entrypoint python corticast:gpu /opt/corticast/gpu_check.py --require-gpu
# A first start builds the TensorRT engine before the API answers: a long start period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
    CMD ["/opt/corticast/bin/python", "/opt/corticast/healthcheck.py"]
ENTRYPOINT ["corticast"]
CMD ["serve", "--config", "/etc/corticast/corticast.toml"]
