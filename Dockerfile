# syntax=docker/dockerfile:1
# Images of the battery fleet software (compose.yaml builds both):
#   target "app" (the default): battery-central, battery-agent and battery-sim installed in
#     /opt/battery-rul/venv without the test tools, run as the unprivileged user brm; the default
#     command serves the API on port 8000 (HEALTHCHECK: GET /health).
#   target "broker": Debian's Mosquitto 2.0 (as on a systemd host) with deploy/mosquitto's
#     add-site and compose's one-shot broker-setup; the configuration is mounted, not baked in.
#
#   docker build -t battery-rul .                    # the app
#   docker build --target broker -t battery-rul-broker .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY common ./common
COPY central ./central
COPY edge_agent ./edge_agent
COPY simulators ./simulators
RUN python -m venv /opt/battery-rul/venv \
    && /opt/battery-rul/venv/bin/pip install --upgrade pip \
    && /opt/battery-rul/venv/bin/pip install .

FROM debian:bookworm-slim AS broker
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mosquitto openssl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/mosquitto/conf.d /etc/mosquitto/certs /etc/mosquitto/credentials \
        /run/mosquitto /var/lib/mosquitto \
    && chown mosquitto:mosquitto /run/mosquitto /var/lib/mosquitto
COPY deploy/mosquitto/add-site deploy/compose/broker-setup /usr/local/bin/
RUN chmod 0755 /usr/local/bin/add-site /usr/local/bin/broker-setup
EXPOSE 8883
# Starts as root to read its configuration, then runs as the user mosquitto (mosquitto.conf).
CMD ["mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]

FROM ${PYTHON_IMAGE} AS app
RUN groupadd --system --gid 10001 brm \
    && useradd --system --uid 10001 --gid brm --home-dir /var/lib/battery-rul --create-home \
        --shell /usr/sbin/nologin brm
COPY --from=build /opt/battery-rul/venv /opt/battery-rul/venv
ENV PATH=/opt/battery-rul/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER brm
WORKDIR /var/lib/battery-rul
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["battery-central", "serve", "--host", "0.0.0.0", "--port", "8000", "--threads", "64"]
