# One image for both processes: `chainer web` (the default command) and `chainer worker` (override the
# command). Build from the repository root: docker build -t chainer:$(python3 -c 'import chainer; print(chainer.__version__)') .
# See deploy/README.md for compose and Kubernetes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the pinned dependencies, then chainer itself --------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A virtualenv without pip: the final stage copies it and gets no packaging tools with it. The base
# image's pip installs into it with --python.
RUN python -m venv --without-pip /opt/chainer
WORKDIR /src

# Dependencies first, so a code change does not reinstall them: exactly the versions in constraints.txt
# (scripts/lock), the same ones the test suite runs against; --no-deps so nothing unpinned comes along,
# and pip check proves the pinned set is complete.
COPY constraints.txt ./
RUN python -m pip --python /opt/chainer/bin/python install --no-deps -r constraints.txt \
    && python -m pip --python /opt/chainer/bin/python check

# Then chainer, built into a wheel from pyproject.toml (hatchling) and installed without dependencies.
COPY pyproject.toml README.md ./
COPY chainer ./chainer
RUN python -m pip --python /opt/chainer/bin/python install --no-deps . \
    && python -m pip --python /opt/chainer/bin/python check \
    && /opt/chainer/bin/chainer --version

# --- final: the virtualenv, the example rules, an unprivileged user -----------------------------------
FROM ${PYTHON_IMAGE}
# PYTHONUNBUFFERED: each log line (key=value, on stderr) reaches the container runtime at once.
# PYTHONDONTWRITEBYTECODE: nothing to write, so the root filesystem can be mounted read-only.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/chainer/bin:$PATH \
    CHAINER_RULES=/etc/chainer/rules.yaml
# No shell, no home: the user only runs chainer. A numeric USER below lets Kubernetes' runAsNonRoot verify it.
RUN groupadd --system --gid 10001 chainer \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin chainer
COPY --from=build /opt/chainer /opt/chainer
# The example rules, so the image starts as it is; mount your own directory over /etc/chainer (read-only):
# chainer reloads rules.yaml when it changes.
COPY rules.yaml /etc/chainer/rules.yaml
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
# Liveness of the default command (chainer web on port 8000); the image has no curl, python does the request.
# The worker has no HTTP port: run it with the healthcheck disabled (deploy/compose.yaml does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["chainer", "web", "--host", "0.0.0.0", "--port", "8000"]
