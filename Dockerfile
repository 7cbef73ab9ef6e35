# syntax=docker/dockerfile:1
#
# spreadhook: the admission webhook + reconciler image.
#   docker build -t spreadhook:0.1.0 .
#
# * Small base: python:3.12-slim (Debian slim, glibc: the `cryptography` and prometheus wheels install as
#   prebuilt manylinux wheels, no compiler needed). Two stages: the build stage creates a virtualenv and
#   installs the package from its own metadata (`pip install .` reads setup.cfg's install_requires, so the
#   image never drifts from the declared dependencies); the runtime stage copies only that virtualenv.
# * Non-root: uid/gid 65532, numeric so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
# * Entry point: the `spreadhook` console script; `spreadhook run` (serve + reconcile) and `spreadhook serve`
#   run gunicorn in-process (spreadhook.server configures it from code, TLS included).
# * No HEALTHCHECK: Kubernetes probes /healthz and /readyz (deploy/deployment.yaml); a Docker HEALTHCHECK
#   would be ignored there and would need curl/TLS tooling in the image.
# * Read-only root filesystem friendly: bytecode is compiled at build time (pip does it on install) and
#   PYTHONDONTWRITEBYTECODE stops attempts at run time; temporary files go to $TMPDIR (an emptyDir in
#   deploy/deployment.yaml).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/spreadhook
WORKDIR /src
# Metadata first, then the source: only what `pip install .` needs. README.md is the long_description;
# the [d] glob copies it when present and lets the build run before it exists.
COPY pyproject.toml setup.cfg README.m[d] ./
COPY spreadhook ./spreadhook
RUN /opt/spreadhook/bin/pip install . \
 && /opt/spreadhook/bin/spreadhook --help >/dev/null

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="spreadhook" \
      org.opencontainers.image.description="Spread a workload's pods over ordered subsets (OpenKruise WorkloadSpread compatible webhook and reconciler)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/spreadhook /opt/spreadhook
ENV PATH=/opt/spreadhook/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
EXPOSE 9443 9444
ENTRYPOINT ["spreadhook"]
CMD ["run", "--cert-dir", "/tls", "--store", "kube", "--port", "9443", "--conversion-port", "9444"]
