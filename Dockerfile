# receiver: webhook receiver and redelivery deduplicator.
# Build: docker build -t receiver .
# Run:   docker run -p 8080:8080 -v receiver-data:/data \
#          -v "$PWD/my.yaml:/etc/receiver/receiver.yaml:ro" -e STRIPE_WEBHOOK_SECRET=... receiver
#   (or, with the built-in demo config: -e RECEIVER_DEMO_SECRET=whsec_...)

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY receiver ./receiver
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="receiver" \
      org.opencontainers.image.description="Webhook receiver and redelivery deduplicator"
# SQLITE_TMPDIR: SQLite's temporary files (a migration's, `receiver compact`'s copy of the
# database) go to the volume, which has the room, whatever the working directory and even with
# a read-only root file system (SQLite otherwise tries /var/tmp, /tmp, then the working one).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECEIVER_CONFIG=/etc/receiver/receiver.yaml \
    SQLITE_TMPDIR=/data
COPY --from=build /install /usr/local
# tini as PID 1: it reaps the orphans a `command` handler's children leave (receiver itself
# waits only for its own) and passes SIGTERM on. Its version is the base image's Debian's.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# /data is the receiver's, and group root's too: OpenShift runs the image under a random uid in
# group 0, which can then write it.
RUN groupadd --system --gid 10001 receiver \
 && useradd --system --uid 10001 --gid receiver --home-dir /data --shell /usr/sbin/nologin receiver \
 && mkdir -p /data /etc/receiver \
 && chown receiver:0 /data \
 && chmod g=u /data
COPY config/docker.yaml /etc/receiver/receiver.yaml
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# /healthz answers from the start, an upgrade's migration included (the listeners open first:
# /readyz says 503 meanwhile). The probe bypasses any HTTP_PROXY the engine sets (urllib would
# send 127.0.0.1 there).
HEALTHCHECK --interval=30s --timeout=3s --start-period=5m --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8081/healthz', timeout=2); sys.exit(0 if r.status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "receiver"]
CMD ["serve"]
