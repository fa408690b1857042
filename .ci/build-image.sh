#!/usr/bin/env bash
# Build deployhook's container image where Docker Hub cannot be reached, and check it.
#
#   .ci/build-image.sh [TAG]        (default TAG: deployhook:dev; needs DOCKER_HOST)
#
# Every docker and compose call goes to DOCKER_HOST, a local unix:// socket (the smoke
# deploy mounts it into the container). DOCKER_GID (default: the socket's group) is the
# image's docker group.
#
# The Dockerfile's base is python:3.11.x-slim-bookworm. Without a registry, this script
# makes a stand-in: a Debian 12 rootfs from debootstrap with Debian's python3 (3.11),
# imported as local/python:3.11-slim-bookworm (rebuilt when its recipe changes: the label
# deployhook.base.recipe); DEPLOYHOOK_IMAGE_BASE names another base. The build runs with
# --network host because the test engines give containers no network (no iptables, no
# forwarding); pip and Debian's archive are reached from the host's network.
# Then, against the image:
#   - its OCI labels and `deployhook --version` agree with deployhook/__init__.py;
#   - /healthz through the image's own HEALTHCHECK;
#   - a smoke deploy as uid 1000 from inside it (repos check, deploy --wait of a stack
#     that `up -d --build` builds, deliver), then `docker stop` must exit 0;
#   - docs/install.md's set-up without Traefik (docker-compose.no-traefik.yml as the
#     override), its commands as written in a copy of the tree: /healthz must answer 200
#     on the published port; without the override, `up` must fail on traefik-public.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-deployhook:dev}
STANDIN=local/python:3.11-slim-bookworm
# Bump when the stand-in's recipe below changes: an engine holding an older one rebuilds it.
# 2: / is 0755 (mktemp -d made it 0700: only root could reach any file), PATH is set.
STANDIN_RECIPE=2
BASE=${DEPLOYHOOK_IMAGE_BASE:-$STANDIN}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

script_start=$SECONDS
root='' name='' work='' compose_dir='' tagged_base=''
cleanup() {
  if [[ -n $root ]]; then rm -rf "$root"; fi
  rm -f image/build-ca.pem
  if [[ -n $name ]]; then docker rm -f -v "$name" >/dev/null 2>&1 || true; fi
  if [[ -n $work ]]; then
    docker compose -p deployhookimagecheck down --timeout 2 --rmi local >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
  if [[ -n $compose_dir ]]; then
    (cd "$compose_dir" && COMPOSE_PROJECT_NAME=deployhooknotraefik IMAGE_TAG=composecheck \
      docker compose down --volumes --timeout 2 >/dev/null 2>&1) || true
    docker rmi deployhook:composecheck >/dev/null 2>&1 || true
    rm -rf "$compose_dir"
  fi
  if [[ -n $tagged_base ]]; then docker rmi "$tagged_base" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
(($# <= 1)) && [[ ${1:-} != -* ]] || { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ -n ${DOCKER_HOST:-} ]] || die "set DOCKER_HOST (e.g. \$(.ci/docker-engine.sh start | tail -n1))"
# Every docker and compose call below goes to DOCKER_HOST, and the smoke deploy mounts
# its socket into the container: a local unix socket is needed.
[[ $DOCKER_HOST == unix://* ]] || die "DOCKER_HOST=$DOCKER_HOST: a unix:// socket is needed"
socket=${DOCKER_HOST#unix://}
[[ -S $socket ]] || die "DOCKER_HOST=$DOCKER_HOST: $socket is not a socket"
docker info --format '{{.ServerVersion}}' >/dev/null || die "no engine answers at $DOCKER_HOST"
docker compose version >/dev/null 2>&1 || die "the docker compose (v2) plugin is missing"
# The group owning the socket: the image's docker group, and the group the smoke deploy
# joins, must be the same.
DOCKER_GID=${DOCKER_GID:-$(stat -c %g "$socket")}

recipe=''
if [[ $BASE == "$STANDIN" ]] && recipe=$(docker image inspect \
    -f '{{index .Config.Labels "deployhook.base.recipe"}}' "$BASE" 2>/dev/null); then
  [[ $recipe == "$STANDIN_RECIPE" ]] ||
    log "$BASE has recipe ${recipe:-none}, not $STANDIN_RECIPE: rebuilding it"
fi
if [[ $BASE == "$STANDIN" && $recipe != "$STANDIN_RECIPE" ]]; then
  command -v debootstrap >/dev/null || apt-get install -y -q --no-install-recommends debootstrap >&2
  root=$(mktemp -d /tmp/deployhook-rootfs.XXXXXX)
  # mktemp -d makes the directory 0700, and it becomes the image's /: then no user but
  # root can reach any file in it (the image's deployhook user could not even exec tini).
  chmod 0755 "$root"
  log "debootstrap bookworm (python3, python3-venv) into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >&2
  # Like the official image: the release, its updates and security archives.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
SOURCES
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/usr/share/doc/* "$root"/usr/share/man/*
  log "importing it as $BASE"
  tar -C "$root" --numeric-owner -c . | docker import --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL deployhook.base.recipe=$STANDIN_RECIPE" \
    --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$root"; root=''
fi
docker image inspect "$BASE" >/dev/null 2>&1 ||
  die "base image $BASE is not in the engine at $DOCKER_HOST (no registry here: load it first)"
# The image runs as a non-root user: the base must let one reach its files.
if ! docker run --rm --network none --user 65534:65534 --entrypoint python3 "$BASE" \
    -c 'import sys' >/dev/null; then
  mode=$(docker run --rm --network none --user 0 --entrypoint stat "$BASE" -c %a / || true)
  die "a non-root user cannot run python3 in $BASE (its / has mode ${mode:-?})"
fi

# pip inside the build must trust what the host trusts (a TLS-inspecting proxy's CA).
if [[ -r /etc/ssl/certs/ca-certificates.crt ]]; then
  cp /etc/ssl/certs/ca-certificates.crt image/build-ca.pem
fi

# The OCI labels' values: the one version source, the commit, the time, the origin (its
# URL without any user:password@).
version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' deployhook/__init__.py)
[[ -n $version ]] || die 'deployhook/__init__.py has no line __version__ = "..."'
revision=$(git rev-parse HEAD 2>/dev/null) || die "not a git checkout: no commit for the revision label"
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  log "uncommitted changes: the revision label names HEAD ($revision) all the same"
fi
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
origin_url=$(git config --get remote.origin.url | sed -E 's#^([a-z+]+://)[^/@]*@#\1#' || true)

log "building $TAG $version ($revision) from $BASE"
start=$SECONDS
previous=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE=$BASE" \
  --build-arg "DOCKER_GID=$DOCKER_GID" --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
  --build-arg "SOURCE=$origin_url" -t "$TAG" . >&2
log "built in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$TAG" | numfmt --to=iec)"
# The image TAG named before, now nameless: a full copy on the test engines' vfs storage.
if [[ -n $previous && $(docker image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null) == 0 ]]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi

log "checking: the OCI labels, deployhook --version, the docker CLI, compose, git"
label() { docker image inspect -f "{{index .Config.Labels \"org.opencontainers.image.$1\"}}" "$TAG"; }
for key in title description licenses; do
  [[ -n $(label "$key") ]] || die "label org.opencontainers.image.$key is empty"
done
[[ $(label version) == "$version" ]] || die "label version is '$(label version)', not $version"
[[ $(label revision) == "$revision" ]] || die "label revision is '$(label revision)', not $revision"
[[ $(label created) == "$created" ]] || die "label created is '$(label created)', not $created"
got=$(docker run --rm --network none "$TAG" --version)
[[ $got == "deployhook, version $version" ]] || die "deployhook --version says '$got', not $version"
echo "$got"
docker run --rm --network none --entrypoint sh "$TAG" -c \
  'docker --version && docker compose version && git --version && id'

name=deployhook-image-check-$$
log "starting it (its HEALTHCHECK every 2 s) and waiting for healthy"
docker run -d --name "$name" --health-interval 2s --health-start-period 5s \
  -e DEPLOYHOOK_STOP_GRACE=5 "$TAG" >/dev/null
for _ in $(seq 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$name")
  [[ $status == healthy ]] && break
  [[ $(docker inspect -f '{{.State.Running}}' "$name") == true ]] || break
  sleep 1
done
[[ $status == healthy ]] || { docker logs "$name" >&2; die "not healthy: $status"; }
docker exec "$name" python3 -c \
  'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8000/healthz").read().decode())'
log "a deploy from inside the image: its git, docker CLI and compose plugin, as uid 1000"
smoke_start=$SECONDS
# A checkout owned by uid 1000 at the same path inside and outside, a one-service stack
# that `up -d --build` builds (FROM the base, already in the engine: no registry needed)
# and waits for healthy.
work=$(mktemp -d /tmp/deployhook-image-check.XXXXXX)
git init -q --bare -b main "$work/origin.git"
git init -q -b main "$work/dev"
printf 'FROM %s\nCOPY index.html /srv/\nCMD ["python3", "-m", "http.server", "-d", "/srv", "8080"]\n' \
  "$BASE" >"$work/dev/Dockerfile"
echo 'deployed from inside the image' >"$work/dev/index.html"
cp .ci/smoke-compose.yml "$work/dev/docker-compose.yml"
git -C "$work/dev" add Dockerfile index.html docker-compose.yml
git -C "$work/dev" -c user.name=ci -c user.email=ci@localhost commit -q -m stack
git -C "$work/dev" push -q "$work/origin.git" HEAD:main
git clone -q "$work/origin.git" "$work/site"
mkdir "$work/config"
printf 'repos:\n  site:\n    path: %s/site\n    project_name: deployhookimagecheck\n    health_timeout: 60\n' \
  "$work" >"$work/config/repos.yml"
chown -R 1000:1000 "$work"
docker rm -f -v "$name" >/dev/null
docker run -d --name "$name" --user 1000:1000 --group-add "$DOCKER_GID" \
  -v "$socket:/var/run/docker.sock" -v "$work:$work" -v "$work/config:/etc/deployhook" \
  -e DEPLOYHOOK_SECRET=image-check-secret-0123456789 -e DEPLOYHOOK_STOP_GRACE=5 "$TAG" >/dev/null
docker exec "$name" deployhook repos check
docker exec "$name" deployhook deploy site --wait --timeout 180
docker exec "$name" deployhook deliver site
running=$(docker ps --filter label=com.docker.compose.project=deployhookimagecheck \
  --filter health=healthy -q | wc -l)
[[ $running -eq 1 ]] || die "expected the stack's one container running and healthy, found $running"

log "docker stop: tini forwards SIGTERM, serve stops gunicorn and the worker"
start=$SECONDS
docker stop -t 30 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
log "stopped in $((SECONDS - start)) s with exit code $code"
docker logs "$name" 2>&1 | grep -q serve_stopped || { docker logs "$name" >&2; die "no serve_stopped in its log"; }
[[ $code == 0 ]] || die "exit code $code"
log "smoke deploy done in $((SECONDS - smoke_start)) s"

log "docs/install.md's set-up without Traefik, its commands as written, in a copy of the tree"
compose_start=$SECONDS
# The copy holds what the build above read (image/build-ca.pem too), so `up --build` finds
# every layer in the cache of the classic builder (DOCKER_BUILDKIT=0, as above): the
# engine's own builds have no network here.
compose_dir=$(mktemp -d /tmp/deployhook-compose-check.XXXXXX)
cp -a Dockerfile .dockerignore docker-compose.yml docker-compose.no-traefik.yml .env.example \
  pyproject.toml README.md LICENSE deployhook image "$compose_dir/"
mkdir "$compose_dir/sites"
# The Dockerfile's default base, if the engine lacks it: the base built above, under its name.
default_base=$(sed -n 's/^ARG BASE=//p' Dockerfile)
if [[ $default_base != "$BASE" ]] && ! docker image inspect "$default_base" >/dev/null 2>&1; then
  docker tag "$BASE" "$default_base"; tagged_base=$default_base
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
set_env() { # KEY VALUE: replace the line KEY=... of .env (it must be in .env.example)
  grep -q "^$1=" .env || die ".env.example has no line $1="
  sed -i "s|^$1=.*|$1=$2|" .env
}
(
  cd "$compose_dir"
  export COMPOSE_PROJECT_NAME=deployhooknotraefik IMAGE_TAG=composecheck DOCKER_BUILDKIT=0
  cp .env.example .env
  mkdir -p config ssh
  printf 'repos: {}\n' > config/repos.yml
  set_env DEPLOY_HOST deploy.example.test
  set_env DEPLOY_PUBLISH "127.0.0.1:$port"
  set_env DOCKER_GID "$DOCKER_GID"
  set_env DOCKER_SOCKET "$socket"
  set_env DEPLOY_ROOT "$compose_dir/sites"
  set_env DEPLOYHOOK_SECRET image-check-secret-0123456789
  set_env DEPLOYHOOK_ADMIN_TOKEN image-check-admin-token-0123456789
  set_env DEPLOYHOOK_STOP_GRACE 5
  ln -s docker-compose.no-traefik.yml docker-compose.override.yml
  docker compose config --quiet
  ! docker compose config | grep -E 'traefik-public|traefik\.enable' ||
    die "the override leaves Traefik's network or labels in the config"
  t=$SECONDS
  docker compose up -d --build >&2 || die "docker compose up -d --build failed (a step missing \
from the engine's build cache needs a network the engine's builds do not have here)"
  for _ in $(seq 60); do
    answer=$(python3 - "$port" <<'PROBE'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
except OSError as exc:
    print(0, exc)
PROBE
)
    [[ $answer == 200\ * ]] && break
    sleep 1
  done
  log "GET http://127.0.0.1:$port/healthz: $answer ($((SECONDS - t)) s after up -d --build)"
  [[ $answer == 200\ * ]] || { docker compose logs >&2; die "/healthz did not answer 200"; }
  docker compose exec -T deployhook deployhook repos check
  docker compose down --volumes --timeout 30 >&2
  # Without the override the file still routes through Traefik's network, which is
  # missing here: what a new user met with the override the docs used to give.
  if docker compose -f docker-compose.yml up -d --no-build >compose-up.log 2>&1; then
    die "docker compose up without Traefik's network worked: the check above tests nothing"
  fi
  grep -q 'traefik-public' compose-up.log || { cat compose-up.log >&2; die "unexpected failure"; }
  log "without the override: $(grep -m1 traefik-public compose-up.log)"
)
log "compose without Traefik done in $((SECONDS - compose_start)) s"
log "ok in $((SECONDS - script_start)) s"
