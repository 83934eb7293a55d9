# One image for the three certflow services: the command names the service.
#   docker run certflow:latest reloader | distributor | unsealer | vault-bootstrap | verify
#
# Wheels are built on the host first (pip inside `docker build` may not reach an index):
#   .venv/bin/pip wheel -w dist/wheels .
#   docker build -t certflow:latest .                                  # public base, index reachable
#   docker build --build-arg BASE_IMAGE=certflow-test-base:latest \
#                --build-arg PIP_NO_INDEX=1 -t certflow:latest .        # local base, offline
# With an index reachable, wheels that do not fit the base's Python (e.g. host 3.11, image 3.12)
# are fetched from the index; with PIP_NO_INDEX=1 the wheels directory must be complete.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG WHEELS_DIR=dist/wheels
ARG PIP_NO_INDEX=0
# Marks this stage's image so a build script can remove it afterwards (the legacy builder keeps it).
ARG BUILD_ID=none
LABEL certflow.build-stage=${BUILD_ID}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY ${WHEELS_DIR}/ /wheels/
# A venv works the same on the Debian python3 base and on the python:slim images.
# pip and setuptools are dropped afterwards: nothing installs at run time (~15 MB less).
RUN python3 -m venv /opt/certflow \
 && /opt/certflow/bin/pip install --find-links /wheels certflow \
 && /opt/certflow/bin/certflow --version \
 && /opt/certflow/bin/python3 -m pip uninstall -q -y pip setuptools

FROM ${BASE_IMAGE}
ENV PATH=/opt/certflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTH_PORT=8080
COPY --from=build /opt/certflow /opt/certflow
# Non-root by default. The stack gives `user: 0:0` only where it is needed: the distributor
# (chown in /opt/iklimco/ssl, Docker socket) and the reloader (SWAG's 0600 files). The unsealer
# stays non-root: its secret is mounted uid 10001, mode 0400.
RUN groupadd --system --gid 10001 certflow \
 && useradd --system --uid 10001 --gid certflow --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin certflow
USER 10001:10001
# Python rather than curl (neither base ships curl). Every 10 s: Swarm marks a task running only
# after its first passing check, so the interval is also how long a new task takes to converge.
# Reads HEALTH_PORT so a port set in the stack is honoured. It asks /livez (the process answers),
# not /health: a failing /health reports a problem outside the process (Storage Box, Vault), and
# letting Swarm kill the task for it would restart the service in a loop and fix nothing.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('HEALTH_PORT', '8080'), timeout=4).status == 200 else 1)"]
ENTRYPOINT ["certflow"]
CMD ["--help"]
