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
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECEIVER_CONFIG=/etc/receiver/receiver.yaml
COPY --from=build /install /usr/local
RUN groupadd --system --gid 10001 receiver \
 && useradd --system --uid 10001 --gid receiver --home-dir /data --shell /usr/sbin/nologin receiver \
 && mkdir -p /data /etc/receiver \
 && chown receiver:receiver /data
COPY config/docker.yaml /etc/receiver/receiver.yaml
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["receiver"]
CMD ["serve"]
