# One image for all Dagster roles of chap-scheduler-dagster: the user-code gRPC server, the
# webserver, the daemon and every run container the DockerRunLauncher starts. docker-compose.yml
# picks the role with `command:`. Nothing secret is baked in: DHIS2_*, DAGSTER_PG_* and
# CHAP_SCHEDULER_* come from the environment at run time.
#
# Build with BuildKit (`DOCKER_BUILDKIT=1 docker build .`, `docker buildx build .` or
# `docker compose build`). No `# syntax=` line on purpose: it makes BuildKit pull the
# docker/dockerfile frontend image from a registry, and the built-in frontend has all this needs.
#
# Base image: PYTHON_IMAGE, the official python:3.11-slim by default. Any image with Python 3.11+
# and its venv module as `python3`, plus groupadd/useradd, gives the same result (venv in
# /opt/venv, the same entry points, uid/gid 10001). Tested with a local Debian bookworm base
# (debootstrap + docker import; README, "The Docker lane"): --build-arg PYTHON_IMAGE=<that image>.
#
# Package index settings for the two `pip install` steps (a mirror, a proxy's CA) are passed as
# optional build secrets, mounted for that one command and never written to a layer:
#   --secret id=pip.conf,src=<pip config file>   (read as PIP_CONFIG_FILE)
#   --secret id=pip-cert,src=<CA bundle>         (read as PIP_CERT)
# Without them pip uses its defaults.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

# `python3`, not `python`: Debian's own Python (a local base) has no `python` command.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependency layer: only pyproject.toml is copied, and only its [project.dependencies] are
# installed, so this layer is rebuilt when the dependencies change, not on every code edit.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-cert \
    if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
    && if [ -f /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Source layer: the project itself, without re-resolving dependencies.
COPY README.md ./
COPY chap_scheduler_dagster ./chap_scheduler_dagster
COPY dhis2_sandbox ./dhis2_sandbox
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-cert \
    if [ -f /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
    && if [ -f /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && pip install --no-deps . \
    && pip check

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home

RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin dagster

COPY --from=builder /opt/venv /opt/venv

# Instance and workspace configuration (no secrets: both read the environment).
# The files stay owned by root, so the running user cannot change them.
COPY deploy/docker/dagster.yaml /opt/dagster/home/dagster.yaml
COPY deploy/docker/workspace.yaml /opt/dagster/deploy/workspace.yaml
# $DAGSTER_HOME/storage holds step logs and local artifacts. It is created here, owned by the
# runtime user, so a fresh named volume mounted on it inherits that ownership.
RUN mkdir -p /opt/dagster/home/storage /opt/dagster/app \
    && chown 10001:10001 /opt/dagster/home /opt/dagster/home/storage /opt/dagster/app

WORKDIR /opt/dagster/app
USER 10001:10001

EXPOSE 3000 4000

# Default role: the user-code gRPC server. The webserver and the daemon override this.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "chap_scheduler_dagster.definitions"]
