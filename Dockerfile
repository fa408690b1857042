# deployhook: the web API, its deploy worker, git, the docker CLI and the Compose v2 plugin.
#
#   docker build -t deployhook .
#   docker build --build-arg DOCKER_GID=$(stat -c %g /var/run/docker.sock) -t deployhook .
#
# Every stage starts from BASE, so the virtualenv built in `build` runs unchanged in the
# final stage. Nothing that compiles is installed anywhere: every Python dependency is a
# wheel, and the final stage holds no pip cache, no apt lists and no build tools.
ARG BASE=python:3.11.13-slim-bookworm

# -- the Python side: a virtualenv with deployhook and its pinned dependencies -----------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/deployhook
# image/build-ca.pem (optional, never committed, not in the final image): the CA bundle
# to trust when pip must go through a TLS-inspecting proxy (.ci/build-image.sh).
COPY image/constraints.txt image/build-ca.pe[m] /src/image/
COPY pyproject.toml README.md LICENSE /src/
COPY deployhook /src/deployhook
RUN if [ -f /src/image/build-ca.pem ]; then export PIP_CERT=/src/image/build-ca.pem; fi; \
    /opt/deployhook/bin/pip install --only-binary=:all: --no-binary=deployhook \
        -c /src/image/constraints.txt "/src[postgres]" \
 && /opt/deployhook/bin/pip uninstall -y pip \
 && find /opt/deployhook -name __pycache__ -prune -exec rm -rf {} +

# -- the docker CLI and the Compose v2 plugin, from Debian's archive ---------------------
# Debian 12 has no separate docker CLI package (docker.io pulls in the daemon), so both
# binaries come from Debian 13's packages, pinned by version and SHA-256. They need only
# libc (>= 2.34); bookworm has 2.36. Bump both lines together (docs/upgrading.md).
FROM ${BASE} AS tools
ARG DEBIAN_POOL=http://deb.debian.org/debian/pool/main
ARG DOCKER_CLI_VERSION=26.1.5+dfsg1-9+deb13u1+b1
ARG DOCKER_CLI_SHA256_AMD64=596647bc4ffaaaf2e2321116b8a10f6a6086ada797c17a7117798cb391a72776
ARG DOCKER_CLI_SHA256_ARM64=85b59a59e76bd1dfcd21d5f811a532823f649b6665c8e698d91de270d1f58377
ARG COMPOSE_VERSION=2.26.1-4
ARG COMPOSE_SHA256_AMD64=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea
ARG COMPOSE_SHA256_ARM64=bbafaa666f3e7fa00ad36f2a8bab889f1c791ca8743d674e7267a3d07203869c
RUN set -eu; \
    arch=$(dpkg --print-architecture); \
    case "$arch" in \
      amd64) cli_sum=$DOCKER_CLI_SHA256_AMD64; compose_sum=$COMPOSE_SHA256_AMD64 ;; \
      arm64) cli_sum=$DOCKER_CLI_SHA256_ARM64; compose_sum=$COMPOSE_SHA256_ARM64 ;; \
      *) echo "no pinned docker CLI for $arch" >&2; exit 1 ;; \
    esac; \
    fetch() { python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(*sys.argv[1:])' "$1" "$2"; }; \
    mkdir -p /tmp/debs /out; cd /tmp/debs; \
    fetch "$DEBIAN_POOL/d/docker.io/docker-cli_${DOCKER_CLI_VERSION}_${arch}.deb" cli.deb; \
    fetch "$DEBIAN_POOL/d/docker-compose/docker-compose_${COMPOSE_VERSION}_${arch}.deb" compose.deb; \
    printf '%s  cli.deb\n%s  compose.deb\n' "$cli_sum" "$compose_sum" | sha256sum -c -; \
    dpkg-deb -x cli.deb cli; dpkg-deb -x compose.deb compose; \
    install -m 755 cli/usr/bin/docker /out/docker; \
    install -m 755 compose/usr/libexec/docker/cli-plugins/docker-compose /out/docker-compose; \
    /out/docker --version; /out/docker-compose version

# -- the image ------------------------------------------------------------------------
FROM ${BASE}
# The user deployhook runs as. Checkouts belong to the host's user: build with that
# user's ids (or run with `user:`), see docs/install.md. DOCKER_GID: the group that owns
# /var/run/docker.sock on the host (`group_add` in docker-compose.yml does it at run time).
ARG DEPLOYHOOK_UID=1000
ARG DEPLOYHOOK_GID=1000
ARG DOCKER_GID=999
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends git openssh-client tini ca-certificates; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*; \
    groupadd --gid "$DEPLOYHOOK_GID" deployhook; \
    useradd --uid "$DEPLOYHOOK_UID" --gid "$DEPLOYHOOK_GID" --create-home \
        --home-dir /home/deployhook --shell /usr/sbin/nologin deployhook; \
    docker_group=$(getent group "$DOCKER_GID" | cut -d: -f1); \
    if [ -z "$docker_group" ]; then groupadd --gid "$DOCKER_GID" docker; docker_group=docker; fi; \
    usermod -aG "$docker_group" deployhook; \
    mkdir -p /data /etc/deployhook; \
    printf '# The registry: see docs/registry.md. Mount your own over /etc/deployhook.\nrepos: {}\n' \
        > /etc/deployhook/repos.yml; \
    chown deployhook:deployhook /data /etc/deployhook /etc/deployhook/repos.yml
COPY --from=tools /out/docker /usr/local/bin/docker
COPY --from=tools /out/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
COPY --from=build /opt/deployhook /opt/deployhook

ENV PATH=/opt/deployhook/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEPLOYHOOK_BIND=0.0.0.0:8000 \
    DEPLOYHOOK_DATA_DIR=/data \
    DEPLOYHOOK_REGISTRY=/etc/deployhook/repos.yml \
    DEPLOYHOOK_STOP_GRACE=900
VOLUME /data
EXPOSE 8000
USER deployhook
WORKDIR /home/deployhook

# 200 while deliveries can be accepted (also when "degraded"), 503 when the store is not
# writable: only that makes the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; h, _, p = os.environ.get('DEPLOYHOOK_BIND', '0.0.0.0:8000').rpartition(':'); h = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]', '': '127.0.0.1'}.get(h, h); urllib.request.urlopen(f'http://{h}:{p}/healthz', timeout=4)"]

# tini is PID 1: it reaps orphans and hands SIGTERM to `deployhook serve`, whose
# supervisor lets running deploys finish (DEPLOYHOOK_STOP_GRACE) or records them as
# interrupted; docker-compose.yml's stop_grace_period must be longer.
ENTRYPOINT ["tini", "--", "deployhook"]
CMD ["serve"]

# OCI metadata, last: a new revision or date changes no other layer. .ci/build-image.sh
# passes VERSION (deployhook/__init__.py), REVISION (the git commit), CREATED (RFC 3339)
# and SOURCE (the clone's origin URL); a plain `docker build` leaves them empty.
ARG VERSION=
ARG REVISION=
ARG CREATED=
ARG SOURCE=
LABEL org.opencontainers.image.title="deployhook" \
      org.opencontainers.image.description="Push-to-deploy receiver for self-hosters: Gitea/GitHub webhooks in, docker compose deploys out" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}"
