# syntax=docker/dockerfile:1
#
# One image for all Dagster roles of chap-scheduler-dagster: the user-code gRPC server, the
# webserver, the daemon and every run container the DockerRunLauncher starts. docker-compose.yml
# picks the role with `command:`. Nothing secret is baked in: DHIS2_*, DAGSTER_PG_* and
# CHAP_SCHEDULER_* come from the environment at run time.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependency layer: only pyproject.toml is copied, and only its [project.dependencies] are
# installed, so this layer is rebuilt when the dependencies change, not on every code edit.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Source layer: the project itself, without re-resolving dependencies.
COPY README.md ./
COPY chap_scheduler_dagster ./chap_scheduler_dagster
COPY dhis2_sandbox ./dhis2_sandbox
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
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
