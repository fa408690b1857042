#!/usr/bin/env bash
# Run contrib/deployhook.service under a real systemd, hardening and all, and deploy with it.
#
#   .ci/check-systemd-unit.sh [IMAGE]   (default IMAGE: deployhook:dev, from .ci/build-image.sh;
#                                        needs DOCKER_HOST, a local unix:// socket)
#
# The CI machine has no systemd as PID 1, so systemd boots in a container: IMAGE plus
# Debian's systemd (installed with --network host, as build-image.sh builds), with the
# engine's socket mounted where the unit's docker CLI looks. IMAGE already holds the pip
# install at /opt/deployhook, the user deployhook and the group docker. Then, inside:
#   - systemd-analyze verify of the unit as shipped (its ExecStart exists there);
#   - the unit starts, /healthz answers, NoNewPrivileges is in effect;
#   - a push delivered to it deploys a checkout under /opt (git writes it through
#     ProtectSystem=full) with `docker compose up -d --build` on the socket;
#   - SIGKILL of the main process: Restart=on-failure brings it back;
#   - systemctl stop ends it with status 0 (KillMode=mixed, SIGTERM to serve).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-deployhook:dev}
CHECK_IMAGE=deployhook-systemd-check:latest
PROJECT=deployhookunitcheck
log() { printf 'check-systemd-unit: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

(($# <= 1)) && [[ ${1:-} != -* ]] || { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ ${DOCKER_HOST:-} == unix://* ]] || die "set DOCKER_HOST to the engine's unix:// socket"
socket=${DOCKER_HOST#unix://}
[[ -S $socket ]] || die "DOCKER_HOST=$DOCKER_HOST: $socket is not a socket"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: run .ci/build-image.sh first"

start=$SECONDS
name=deployhook-systemd-check-$$ ctx=''
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker compose -p "$PROJECT" down --timeout 2 --rmi local >/dev/null 2>&1 || true
  if [[ -n $ctx ]]; then rm -rf "$ctx"; fi
}
trap cleanup EXIT
cleanup   # a stack left by an interrupted run would pass for this run's deploy

log "building $CHECK_IMAGE: $IMAGE with systemd"
ctx=$(mktemp -d /tmp/deployhook-systemd-check.XXXXXX)
cp contrib/deployhook.service "$ctx/"
if [[ -r /etc/ssl/certs/ca-certificates.crt ]]; then
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/build-ca.pem"   # a TLS-inspecting proxy's CA
else
  : >"$ctx/build-ca.pem"
fi
cat >"$ctx/Dockerfile" <<EOF
FROM $IMAGE
USER root
COPY build-ca.pem /tmp/build-ca.pem
RUN set -eu; ca=''; if [ -s /tmp/build-ca.pem ]; then ca='-o Acquire::https::CAInfo=/tmp/build-ca.pem'; fi; \\
    apt-get \$ca update -q; \\
    apt-get \$ca install -y -q --no-install-recommends systemd systemd-sysv dbus >/dev/null; \\
    rm -rf /var/lib/apt/lists/* /tmp/build-ca.pem
COPY deployhook.service /etc/systemd/system/deployhook.service
EOF
previous=$(docker image inspect -f '{{.Id}}' "$CHECK_IMAGE" 2>/dev/null || true)
DOCKER_BUILDKIT=0 docker build --network host -t "$CHECK_IMAGE" "$ctx" | grep -E "^Step|Using cache" >&2
# The image built before, now nameless: a full copy on the test engines' vfs storage.
if [[ -n $previous && $(docker image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null) == 0 ]]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi

log "booting systemd in a container"
# systemd needs to mount and manage its cgroups: every capability this host can grant
# (not all hosts grant CAP_SYS_RESOURCE, which --privileged would require).
docker run -d --name "$name" --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns private \
  --tmpfs /run --tmpfs /run/lock -e container=docker --entrypoint /lib/systemd/systemd \
  -v "$socket:/var/run/docker.sock" "$CHECK_IMAGE" >/dev/null 2>&1 ||
  die "docker run of the systemd container failed"
state=''
for _ in $(seq 60); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  [[ $state == running || $state == degraded ]] && break
  sleep 1
done
[[ $state == running || $state == degraded ]] || {
  docker logs "$name" >&2; die "systemd did not boot (state: ${state:-none})"; }

log "inside: verify, start, deliver a push, SIGKILL, stop"
docker exec -i -e IMAGE="$IMAGE" -e PROJECT="$PROJECT" -e SMOKE_COMPOSE="$(cat .ci/smoke-compose.yml)" \
  "$name" bash -s <<'INSIDE'
set -euo pipefail
fail() { echo "check-systemd-unit: ERROR: $*" >&2; journalctl -u deployhook --no-pager | tail -40 >&2; exit 1; }
unit=/etc/systemd/system/deployhook.service
said=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify failed: $said"
[[ -z $said ]] || fail "systemd-analyze verify: $said"

secret=unit-check-secret-0123456789
install -d -m 755 /etc/deployhook
install -m 600 /dev/null /etc/deployhook/deployhook.env
echo "DEPLOYHOOK_SECRET=$secret" >>/etc/deployhook/deployhook.env
# Root pushes the test's commits into an origin that deployhook owns.
git config --global --add safe.directory '*'
git init -q --bare -b main /srv/origin.git
git init -q -b main /srv/dev
printf 'FROM %s\nUSER root\nCOPY index.html /srv/\nENTRYPOINT []\nCMD ["python3", "-m", "http.server", "-d", "/srv", "8080"]\n' \
  "$IMAGE" >/srv/dev/Dockerfile
echo v1 >/srv/dev/index.html
printf '%s\n' "$SMOKE_COMPOSE" >/srv/dev/docker-compose.yml
commit() { git -C /srv/dev add -A && git -C /srv/dev -c user.name=ci -c user.email=ci@localhost commit -qm "$1" &&
  git -C /srv/dev push -q /srv/origin.git HEAD:main; }
commit v1
chown -R deployhook: /srv/origin.git
install -d -o deployhook -g deployhook /opt/websites
runuser -u deployhook -- git clone -q /srv/origin.git /opt/websites/site
printf 'repos:\n  site:\n    path: /opt/websites/site\n    project_name: %s\n    health_timeout: 60\n' \
  "$PROJECT" >/etc/deployhook/repos.yml

healthz() { python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=2).read().decode())' 2>/dev/null; }
wait_healthz() { for _ in $(seq 30); do healthz && return 0; sleep 1; done; fail "no /healthz"; }
systemctl daemon-reload
systemctl start deployhook
wait_healthz
pid=$(systemctl show -p MainPID --value deployhook)
grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || fail "NoNewPrivileges is not in effect"
[[ $(systemctl show -p LimitNOFILE --value deployhook) == 65536 ]] || fail "LimitNOFILE is not 65536"
echo "open files: $(awk '/open files/ {print $4, "soft,", $5, "hard"}' "/proc/$pid/limits") (capped by the container's own limit)"

echo v2 >/srv/dev/index.html
commit v2
want=$(git -C /srv/dev rev-parse HEAD)
DEPLOYHOOK_REGISTRY=/etc/deployhook/repos.yml DEPLOYHOOK_SECRET=$secret \
  runuser -u deployhook -p -- deployhook deliver site
finished=''
for _ in $(seq 120); do
  finished=$(journalctl -u deployhook --no-pager -o cat | grep '"job_finished"' || true)
  [[ -n $finished ]] && break
  sleep 1
done
[[ -n $finished ]] || fail "the push's job did not finish"
[[ $finished == *'"status": "succeeded"'* ]] || fail "the push's job did not succeed: $finished"
[[ $(git -C /opt/websites/site rev-parse HEAD) == "$want" ]] || fail "the checkout is not at $want"
docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter health=healthy | grep -q . ||
  fail "the stack is not running healthy"
echo "deployed $(git -C /opt/websites/site rev-parse --short HEAD), checkout owned by $(stat -c %U /opt/websites/site/index.html)"

kill -KILL "$pid"
for _ in $(seq 30); do
  [[ $(systemctl show -p NRestarts --value deployhook) -ge 1 ]] && healthz >/dev/null && break
  sleep 1
done
[[ $(systemctl show -p NRestarts --value deployhook) -ge 1 ]] || fail "not restarted after SIGKILL"
wait_healthz >/dev/null
echo "restarted after SIGKILL"

t=$SECONDS
# Idle, serve and its children stop in a second or two; TimeoutStopSec (960 s) is for
# deploys that are still running, and none is.
timeout 120 systemctl stop deployhook ||
  fail "systemctl stop took more than 120 s with no deploy running (a hung worker?)"
echo "stopped in $((SECONDS - t)) s: $(systemctl show -p Result -p ExecMainStatus deployhook | tr '\n' ' ')"
[[ $(systemctl show -p Result --value deployhook) == success ]] || fail "stop did not end in success"
[[ $(systemctl show -p ExecMainStatus --value deployhook) == 0 ]] || fail "serve did not exit 0"
INSIDE
log "ok in $((SECONDS - start)) s"
