# Dockerfile: the semipaintd image: a Debian 12 build stage running the Makefile targets CI runs, and a slim runtime stage with the binaries, the shipped weights and the runtime libraries.
#
#   docker build -t semipaint:cpu .                                # CPU (oneDNN): the default target, runtime-cpu
#   docker build --target runtime-cuda -t semipaint:cuda .         # GPU (cuDNN), run with --gpus all
#   podman build --format docker -t semipaint:cpu .                # the same with Podman or `buildah bud`
#                                     (--format docker: the OCI format, their default, has no HEALTHCHECK)
#   docker run -p 8080:8080 -v semipaint-data:/data semipaint:cpu
#   docker run --rm -v semipaint-data:/data -v "$PWD/photos:/images:ro" semipaint:cpu \
#          semipaint index build --images /images --out /data/db      # then restart the service
#   docker run --rm -v semipaint-data:/data -v "$PWD/scenes:/images-general:ro" semipaint:cpu \
#          semipaint index build --images /images-general --out /data/db-general --size 128
#
# Configuration: /etc/semipaint/semipaintd.yaml (docker/base/semipaintd.yaml; mount another file
# there, or pass -c FILE), and SEMIPAINT_<SECTION>_<KEY> (SEMIPAINT_FAMILIES_<NAME>_<KEY>)
# environment variables over it. It serves every model family of config/semipaintd.yaml: faces
# (weights/*.safetensors, database /data/db) and general (weights/general/, 128 px, database
# /data/db-general), with the router weights/router.safetensors for model=auto. The databases are on
# the /data volume; until a family's is built, that family runs Sim-0 (docker/entrypoint.sh).
# .dockerignore keeps weights/ to what the daemon loads and the model cards (no training logs).
#
# Both variants build and run on Debian 12, with the Debian packages scripts/deps.sh installs for
# CI: the nvidia/cuda images (Ubuntu) only contribute the CUDA toolkit and cuDNN, copied across,
# since scripts/deps.sh and scripts/faiss_c.sh are written for Debian's packages.
# The variant is the target stage (runtime-cpu, the last one and so the default, or runtime-cuda),
# never a build argument in a FROM line: Buildah (and so Podman) resolves `FROM <stage>-${ARG}` as
# an image name and stops. BuildKit and Buildah (--skip-unused-stages, its default) build only the
# stages the target needs. BUILD_BASE and BASE are the Debian 12 images the build and the runtime
# start from (another Debian 12 image may stand in: make image-test uses a debootstrap one).

ARG CUDA_VERSION=13.0.0
ARG BUILD_BASE=debian:12
ARG BASE=debian:12-slim

# ---- CUDA 13 toolkit and cuDNN 9, gathered under /opt/cuda (runtime-cuda only) ----
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu24.04 AS cuda-devel
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN shopt -s nullglob \
 && mkdir -p /opt/cuda \
 && cp -a "$(readlink -f /usr/local/cuda)/." /opt/cuda/ \
 && for h in /usr/include/cudnn*.h /usr/include/x86_64-linux-gnu/cudnn*.h; do \
      [ -e "$h" ] || continue; b=$(basename "$h" .h); cp -L "$h" "/opt/cuda/include/${b%_v9}.h"; \
    done \
 && cp -a /usr/lib/x86_64-linux-gnu/libcudnn*.so.[0-9]* /opt/cuda/lib64/ \
 && for f in /opt/cuda/lib64/libcudnn*.so.[0-9]; do ln -sf "$(basename "$f")" "${f%.[0-9]}"; done \
 && test -f /opt/cuda/include/cudnn.h && test -e /opt/cuda/lib64/libcudnn.so && test -x /opt/cuda/bin/nvcc

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu24.04 AS cuda-runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN shopt -s nullglob \
 && mkdir -p /opt/cuda-lib \
 && cd "$(readlink -f /usr/local/cuda)/lib64" \
 && cp -a libcudart.so.* libcublas.so.* libcublasLt.so.* libnvrtc*.so.* libnvJitLink.so.* /opt/cuda-lib/ \
 && cp -a /usr/lib/x86_64-linux-gnu/libcudnn*.so.[0-9]* /opt/cuda-lib/ \
 && test -e /opt/cuda-lib/libcudart.so.13 && test -e /opt/cuda-lib/libcudnn.so.9

# ---- build: Debian 12, scripts/deps.sh, make ----
# hadolint ignore=DL3006
FROM ${BUILD_BASE} AS build-deps
WORKDIR /src
# Packages and libfaiss_c first, so that they stay cached while the sources change.
COPY scripts/deps.sh scripts/faiss_c.sh scripts/
RUN bash scripts/deps.sh && bash scripts/faiss_c.sh

FROM build-deps AS build-cpu
# RUN_TESTS=1 also runs `make unit-test` (the unit and integration tests) in the build.
ARG RUN_TESTS=0
ENV SP_MAKE_ARGS=""
COPY . .
# `make deps` first: the `all` target's deps prerequisite would otherwise run beside the compilers under -j.
RUN make deps \
 && make -j"$(nproc)" $SP_MAKE_ARGS all \
 && if [ "$RUN_TESTS" = 1 ]; then make $SP_MAKE_ARGS unit-test; fi \
 && build/semipaintd --version

FROM build-deps AS build-cuda
ARG RUN_TESTS=0
COPY --from=cuda-devel /opt/cuda /usr/local/cuda
ENV PATH=/usr/local/cuda/bin:$PATH \
    CPATH=/usr/local/cuda/include \
    LIBRARY_PATH=/usr/local/cuda/lib64 \
    SP_MAKE_ARGS="CUDA=1 CUDA_HOME=/usr/local/cuda"
COPY . .
RUN make deps \
 && make -j"$(nproc)" $SP_MAKE_ARGS all \
 && if [ "$RUN_TESTS" = 1 ]; then make $SP_MAKE_ARGS unit-test; fi \
 && build/semipaintd --version

# ---- runtime: Debian 12 slim, the binaries, weights and configuration, a non-root user ----
# runtime-base is everything but the binaries; runtime-cuda and runtime-cpu (last: the default
# target) add their build's files and, for CUDA, its libraries.
# hadolint ignore=DL3006
FROM ${BASE} AS runtime-base
LABEL org.opencontainers.image.title="semipaint" \
      org.opencontainers.image.description="semipaintd: semi-parametric image inpainting over HTTP (Iskakov 2018)"
# Runtime libraries of build/semipaintd (tests/it_deploy.sh checks this list against its NEEDED
# entries); curl is for the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libdnnl2 libmicrohttpd12 libcjson1 libyaml-0-2 libturbojpeg0 libpng16-16 libwebp7 libdeflate0 libopenblas0 libgomp1 \
      libstdc++6 libgcc-s1 zlib1g curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 semipaint \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin semipaint \
 && mkdir -p /data /etc/semipaint /opt/semipaint \
 && chown 10001:10001 /data
WORKDIR /opt/semipaint
ENV OMP_WAIT_POLICY=PASSIVE
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# /healthz is liveness: 200 from the start, while the models load too (no start period needed);
# the port is server.listen's.
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/semipaint-entrypoint"]
CMD ["-c", "/etc/semipaint/semipaintd.yaml"]

FROM runtime-base AS runtime-cuda
LABEL io.semipaint.backend="cuda"
USER root
COPY --from=cuda-runtime /opt/cuda-lib/ /usr/local/cuda/lib64/
RUN echo /usr/local/cuda/lib64 > /etc/ld.so.conf.d/cuda.conf && ldconfig
# The NVIDIA container runtime mounts the driver (libcuda) into containers that ask for it.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build-cuda /src/build/semipaintd /src/build/semipaint /usr/local/bin/
COPY --from=build-cuda /src/weights/ /opt/semipaint/weights/
COPY --from=build-cuda /src/config/ /opt/semipaint/config/
COPY --from=build-cuda /src/docker/base/semipaintd.yaml /etc/semipaint/semipaintd.yaml
COPY --from=build-cuda /src/docker/entrypoint.sh /usr/local/bin/semipaint-entrypoint
USER 10001:10001

FROM runtime-base AS runtime-cpu
LABEL io.semipaint.backend="cpu"
COPY --from=build-cpu /src/build/semipaintd /src/build/semipaint /usr/local/bin/
COPY --from=build-cpu /src/weights/ /opt/semipaint/weights/
COPY --from=build-cpu /src/config/ /opt/semipaint/config/
COPY --from=build-cpu /src/docker/base/semipaintd.yaml /etc/semipaint/semipaintd.yaml
COPY --from=build-cpu /src/docker/entrypoint.sh /usr/local/bin/semipaint-entrypoint
