#!/usr/bin/env bash
# Private Docker engines for deployhook's tests (no system dockerd needed).
#
#   .ci/docker-engine.sh start [NAME]            start or reuse engine NAME; last stdout line = DOCKER_HOST
#   .ci/docker-engine.sh host  [NAME]            print DOCKER_HOST if NAME answers, else exit 1
#   .ci/docker-engine.sh stop  [NAME]            SIGTERM, wait, clean runtime state (keeps images)
#   .ci/docker-engine.sh purge [NAME]            stop, then delete the engine's data too
#   .ci/docker-engine.sh scratch-image [NAME] TAG
#                                                build TAG FROM scratch with static busybox + applets
#   .ci/docker-engine.sh status [NAME]           human-readable state (stderr), exit 0 if answering
#
# NAME defaults to "deployhook". Each NAME is a separate dockerd (vfs storage,
# no iptables, own bridge "dhbrN", own address range 10.N.0.0/16, own
# exec-root /tmp/dhx-<hash>), so several engines can run at once.
# State lives in ${DEPLOYHOOK_DOCKER_BASE:-/tmp/deployhook-docker}/NAME:
#   data/ (data-root), dockerd.log, dockerd.pid, docker.sock, net-index, daemon.json
# Only stdout's last line of "start"/"host" is meant for machines:
#   export DOCKER_HOST=$(.ci/docker-engine.sh start | tail -n1)
set -euo pipefail
# dockerd, iptables and ip live in /usr/sbin, which a PATH given to tests may leave out.
PATH=$PATH:/usr/sbin:/sbin

PROG=docker-engine
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BASE_ROOT=${DEPLOYHOOK_DOCKER_BASE:-/tmp/deployhook-docker}
START_TIMEOUT=${DEPLOYHOOK_DOCKER_START_TIMEOUT:-60}
STOP_TIMEOUT=${DEPLOYHOOK_DOCKER_STOP_TIMEOUT:-30}
# Registry of bridge/subnet indexes in use, shared by all bases on the host.
NET_REGISTRY=/tmp/dhx-netidx
NET_INDEX_MIN=64    # engine index N -> bridge dhbrN, subnets 10.N.0.0/16
NET_INDEX_MAX=191

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------- paths --
set_paths() {
  NAME=$1
  # also used as containerd namespace and cgroup name: keep it plain
  [[ $NAME =~ ^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$ && ${#NAME} -le 40 ]] ||
    die "invalid engine name '$NAME' (letters, digits, single . _ - between them; max 40)"
  BASE=$BASE_ROOT/$NAME
  DATA=$BASE/data
  LOGF=$BASE/dockerd.log
  PIDF=$BASE/dockerd.pid
  CONF=$BASE/daemon.json
  IDXF=$BASE/net-index
  local id
  id=$(printf '%s' "$BASE" | cksum | awk '{printf "%08x", $1}')
  # exec-root holds netns/plugin sockets whose paths must stay short.
  EXEC=/tmp/dhx-$id
  SOCK=$BASE/docker.sock
  # unix socket paths must be < 108 bytes; fall back to a short path.
  if (( ${#SOCK} > 100 )); then SOCK=$EXEC.sock; fi
  DOCKER_HOST_VALUE=unix://$SOCK
}

engine_pid() { # prints pid of this engine's running dockerd, or fails
  local pid
  [[ -f $PIDF ]] || return 1
  pid=$(tr -dc '0-9' <"$PIDF")
  [[ -n $pid ]] && is_live "$pid" || return 1
  # make sure the pid is really our dockerd (pid reuse)
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--pidfile $PIDF" || return 1
  echo "$pid"
}

answers() { # does the engine answer "docker info"?
  [[ -S $SOCK ]] || return 1
  timeout 10 env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    docker -H "$DOCKER_HOST_VALUE" info --format '{{.ID}}' >/dev/null 2>&1 ||
  timeout 10 /usr/bin/docker -H "$DOCKER_HOST_VALUE" info --format '{{.ID}}' >/dev/null 2>&1
}

dk() { # docker client bound to this engine
  env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    DOCKER_HOST="$DOCKER_HOST_VALUE" docker "$@"
}

# ------------------------------------------------------- network index --
# Each engine gets an index N: bridge "dhbrN" at 10.N.0.1/24 and
# user-defined networks from 10.N.0.0/16 (/24 each), so engines don't clash.
alloc_net_index() {
  mkdir -p "$NET_REGISTRY"
  exec 9>"$NET_REGISTRY/.lock"
  flock -w 30 9 || die "could not lock $NET_REGISTRY"
  local n owner span=$((NET_INDEX_MAX - NET_INDEX_MIN + 1)) start i
  if [[ -f $IDXF ]]; then
    n=$(tr -dc '0-9' <"$IDXF")
    owner=$(cat "$NET_REGISTRY/$n" 2>/dev/null || true)
    if [[ -n $n ]] && { [[ -z $owner || $owner == "$BASE" ]] || ! owner_running "$owner"; } &&
       net_index_free_on_host "$n"; then
      echo "$BASE" >"$NET_REGISTRY/$n"
      NET_INDEX=$n; flock -u 9; exec 9>&-; return
    fi
  fi
  start=$(( $(printf '%s' "$NAME" | cksum | awk '{print $1}') % span ))
  for ((i = 0; i < span; i++)); do
    n=$((NET_INDEX_MIN + (start + i) % span))
    owner=$(cat "$NET_REGISTRY/$n" 2>/dev/null || true)
    if [[ -n $owner && $owner != "$BASE" ]]; then
      # stale entry? (owner's dockerd gone)
      if owner_running "$owner"; then continue; fi
    fi
    net_index_free_on_host "$n" || continue
    echo "$BASE" >"$NET_REGISTRY/$n"
    echo "$n" >"$IDXF"
    NET_INDEX=$n; flock -u 9; exec 9>&-; return
  done
  die "no free network index in $NET_INDEX_MIN..$NET_INDEX_MAX"
}

owner_running() { # $1: base dir of another engine
  local pid
  pid=$(tr -dc '0-9' <"$1/dockerd.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && is_live "$pid"
}

net_index_free_on_host() { # no foreign route in 10.N.0.0/16, bridge unused
  local n=$1 r
  r=$(ip -4 route show 2>/dev/null | awk -v p="10.$n." 'index($1,p)==1 && $0 !~ / dev (dhbr'"$n"'|br-[0-9a-f]+) /' || true)
  [[ -z $r ]]
}

ensure_bridge() {
  BRIDGE=dhbr$NET_INDEX
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add name "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
  fi
  # dockerd refuses --bridge together with --bip: the default network takes
  # the bridge's own address, so give it one.
  if ! ip -4 addr show dev "$BRIDGE" | grep -qF " 10.$NET_INDEX.0.1/24 "; then
    ip -4 addr flush dev "$BRIDGE"
    ip addr add "10.$NET_INDEX.0.1/24" dev "$BRIDGE" || die "cannot address bridge $BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

# -------------------------------------------------------------- cleanup --
umount_under() { # lazily unmount everything mounted below $1 (deepest first)
  local dir=$1 m
  [[ -d $dir ]] || return 0
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# A supervised containerd and its shims (their command lines name this
# engine's exec-root), container processes (in this engine's cgroup parent
# /dh-NAME) and docker-proxy processes (forwarding to this engine's subnet)
# can outlive a SIGKILLed dockerd. Only called when dockerd is gone.
engine_cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/"dh-$NAME" /sys/fs/cgroup/"dh-$NAME"; do
    [[ -d $d ]] && echo "$d"
  done
  return 0
}

is_live() { # pid exists and is not a zombie
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

# shellcheck disable=SC2207  # pids are plain numbers
kill_leftovers() {
  local p n d pids=()
  pids+=($(pgrep -f -- "$EXEC/" 2>/dev/null || true))
  for d in $(engine_cgroup_dirs); do
    pids+=($(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true))
  done
  if [[ -f $IDXF ]] && n=$(tr -dc '0-9' <"$IDXF") && [[ -n $n ]]; then
    pids+=($(pgrep -f -- "docker-proxy .*-container-ip 10\.$n\." 2>/dev/null || true))
  fi
  # unique, and not zombies (nothing to kill; pid 1 here may never reap them)
  local live=()
  for p in $(printf '%s\n' "${pids[@]}" | sort -un); do
    is_live "$p" && live+=("$p")
  done
  pids=("${live[@]}")
  ((${#pids[@]})) || return 0
  log "terminating leftover processes of engine '$NAME': ${pids[*]}"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  local i
  for ((i = 0; i < 25; i++)); do
    local alive=0
    for p in "${pids[@]}"; do is_live "$p" && alive=1; done
    ((alive)) || return 0
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}

cleanup_runtime() {
  umount_under "$EXEC"
  umount_under "$DATA"
  rm -rf "$EXEC" "$EXEC.sock"
  rm -f "$SOCK" "$PIDF"
  if [[ -f $IDXF ]]; then
    local n br
    n=$(tr -dc '0-9' <"$IDXF")
    br=dhbr$n
    # bridges dockerd left behind in our range: user-defined networks (br-*),
    # swarm's docker_gwbridge (a host-wide name!)
    local dev
    for dev in $(ip -4 -o addr show 2>/dev/null | awk -v p="10.$n." 'index($4,p)==1 {print $2}' | sort -u); do
      if [[ -d /sys/class/net/$dev/bridge ]]; then ip link del "$dev" 2>/dev/null || true; fi
    done
    ip link del "$br" 2>/dev/null || true
    if [[ -n $n && $(cat "$NET_REGISTRY/$n" 2>/dev/null || true) == "$BASE" ]]; then
      rm -f "$NET_REGISTRY/$n"
    fi
  fi
  # cgroups of containers killed with the daemon
  local cg
  for cg in $(engine_cgroup_dirs); do
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

# ----------------------------------------------------------------- start --
print_log_tail() {
  log "---- last 50 lines of $LOGF ----"
  tail -n 50 "$LOGF" >&2 2>/dev/null || true
  log "---- end of log ----"
}

cmd_start() {
  local t0=$SECONDS pid
  command -v dockerd >/dev/null || die "dockerd not installed (run .ci/install-system.sh)"
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  mkdir -p "$BASE"

  if pid=$(engine_pid); then
    if answers; then
      log "engine '$NAME' already running (pid $pid), reusing"
      echo "$DOCKER_HOST_VALUE"; return 0
    fi
    log "engine '$NAME' (pid $pid) does not answer yet; waiting"
    if wait_answer "$pid" "$START_TIMEOUT"; then
      log "engine '$NAME' answers (pid $pid), reusing"
      echo "$DOCKER_HOST_VALUE"; return 0
    fi
    log "engine '$NAME' (pid $pid) is stuck; restarting it"
    cmd_stop
  fi

  kill_leftovers
  cleanup_runtime
  alloc_net_index
  ensure_bridge
  mkdir -p "$DATA" "$EXEC"
  # own (empty) config so /etc/docker/daemon.json never leaks in
  [[ -f $CONF ]] || echo '{}' >"$CONF"

  local -a args=(
    --config-file "$CONF"
    --storage-driver=vfs
    --iptables=false --ip6tables=false
    # the host keeps ip_forward as it is: containers talk to each other
    # and to the host only, never beyond
    --ip-forward=false --ip-masq=false
    --data-root "$DATA"
    --exec-root "$EXEC"
    --pidfile "$PIDF"
    --host "$DOCKER_HOST_VALUE"
    --bridge "$BRIDGE"    # pre-created, addressed 10.N.0.1/24
    --default-address-pool "base=10.$NET_INDEX.0.0/16,size=24"
    --cgroup-parent "/dh-$NAME"
    --containerd-namespace "dh-$NAME"
    --containerd-plugins-namespace "dh-$NAME-plugins"
    --userland-proxy=true
  )
  log "starting dockerd '$NAME': bridge $BRIDGE, 10.$NET_INDEX.0.0/16, socket $SOCK, log $LOGF"
  # keep the log from growing without bound across restarts
  if [[ -f $LOGF ]] && (( $(stat -c %s "$LOGF") > 20*1024*1024 )); then
    mv -f "$LOGF" "$LOGF.old"
  fi
  echo "==== $(date -u +%FT%TZ) dockerd ${args[*]}" >>"$LOGF"
  # setsid: own session, survives the caller's shell/job control; no fd of
  # ours (locks, the caller's pipes) is inherited.
  setsid dockerd "${args[@]}" </dev/null >>"$LOGF" 2>&1 8>&- 9>&- &
  pid=$!
  disown "$pid" 2>/dev/null || true

  if ! wait_answer "$pid" "$START_TIMEOUT"; then
    log "dockerd '$NAME' did not come up (timeout ${START_TIMEOUT}s)"
    print_log_tail
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do is_live "$pid" || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    cleanup_runtime
    exit 1
  fi
  log "engine '$NAME' up (pid $pid) in $((SECONDS - t0))s"
  echo "$DOCKER_HOST_VALUE"
}

wait_answer() { # $1 pid, $2 timeout seconds
  local pid=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    if ! is_live "$pid"; then
      log "dockerd (pid $pid) exited"
      return 1
    fi
    answers && return 0
    sleep 0.5
  done
  return 1
}

# ------------------------------------------------------------------ stop --
cmd_stop() {
  local pid
  if ! pid=$(engine_pid); then
    log "engine '$NAME' not running; cleaning up leftovers"
    kill_leftovers
    cleanup_runtime
    return 0
  fi
  if answers; then
    local swarm
    swarm=$(dk info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)
    if [[ -n $swarm && $swarm != inactive ]]; then
      log "engine '$NAME' is in a swarm ($swarm): docker swarm leave --force"
      dk swarm leave --force >&2 || log "swarm leave failed (continuing)"
    fi
  fi
  log "stopping engine '$NAME' (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while is_live "$pid" && ((SECONDS < deadline)); do sleep 0.3; done
  if is_live "$pid"; then
    log "dockerd still alive after ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  kill_leftovers
  cleanup_runtime
  log "engine '$NAME' stopped"
}

cmd_purge() {
  cmd_stop
  umount_under "$BASE"
  rm -rf "$BASE"
  log "engine '$NAME' purged ($BASE removed)"
}

cmd_host() {
  if engine_pid >/dev/null && answers; then
    echo "$DOCKER_HOST_VALUE"
  else
    log "engine '$NAME' is not running/answering"
    return 1
  fi
}

cmd_status() {
  local pid
  if pid=$(engine_pid); then
    if answers; then
      log "engine '$NAME': running, pid $pid, DOCKER_HOST=$DOCKER_HOST_VALUE, net-index $(cat "$IDXF" 2>/dev/null)"
      dk version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}})' >&2 || true
      return 0
    fi
    log "engine '$NAME': pid $pid alive but not answering"; return 1
  fi
  log "engine '$NAME': not running"; return 1
}

# --------------------------------------------------------- scratch image --
# A tiny image FROM scratch with static busybox (Debian busybox-static) and
# its applets as symlinks in /bin; nothing can be pulled here.
cmd_scratch_image() {
  local tag=$1 bb=/bin/busybox sum have
  [[ -x $bb ]] || die "$bb missing (apt-get install busybox-static)"
  if ldd "$bb" >/dev/null 2>&1; then die "$bb is not static (install busybox-static)"; fi
  answers || die "engine '$NAME' not running (run: $0 start $NAME)"
  sum=$(sha256sum "$bb" | cut -c1-64)
  have=$(dk image inspect --format '{{index .Config.Labels "deployhook.busybox.sha256"}}' "$tag" 2>/dev/null || true)
  if [[ $have == "$sum" ]]; then
    log "image $tag already built from this busybox, skipping"
    echo "$tag"; return 0
  fi
  local ctx
  ctx=$(mktemp -d /tmp/dh-scratch.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$ctx'" EXIT
  cp "$bb" "$ctx/busybox"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ctx/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/group"
  cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY passwd group /etc/
RUN ["/bin/busybox","sh","-c","mkdir -p /tmp /root /usr/bin /sbin /usr/sbin /var/www && chmod 1777 /tmp"]
ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin
LABEL deployhook.busybox.sha256="$sum"
CMD ["/bin/sh"]
EOF
  local t0=$SECONDS
  log "building $tag FROM scratch with $(basename "$bb") ($($bb | head -n1 | cut -d' ' -f1-2))"
  # classic builder: works with the Debian 20.10 engine and any client,
  # with or without buildx installed
  DOCKER_BUILDKIT=0 dk build -q -t "$tag" "$ctx" >&2 2>"$ctx/build.err" || {
    cat "$ctx/build.err" >&2; die "build of $tag failed"; }
  # (the CLI warns "IPv4 forwarding is disabled": expected, see --ip-forward)
  dk run --rm --network none "$tag" sh -c 'echo "busybox ok: $(ls /bin | wc -l) applets"' >&2 ||
    die "smoke test of $tag failed"
  log "built $tag in $((SECONDS - t0))s"
  echo "$tag"
}

# ------------------------------------------------------------------ main --
cmd=${1:-}
[[ -n $cmd ]] || usage
shift
case $cmd in
  start|stop|host|purge|status)
    (($# <= 1)) || usage
    set_paths "${1:-deployhook}"
    if [[ $cmd == start || $cmd == stop || $cmd == purge ]]; then
      # one start/stop at a time per engine (parallel test workers)
      mkdir -p "$BASE"
      exec 8>"$BASE/.lock"
      flock -w 120 8 || die "engine '$NAME' is locked by another start/stop"
    fi
    "cmd_$cmd"
    ;;
  scratch-image)
    case $# in
      1) set_paths deployhook; cmd_scratch_image "$1" ;;
      2) set_paths "$1"; cmd_scratch_image "$2" ;;
      *) usage ;;
    esac
    ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
