#!/usr/bin/env bash
# Install every Debian package deployhook's CI needs, plus the Docker Compose
# v2 CLI plugin (not packaged in Debian 12: taken from Debian 13 "trixie").
#
# Idempotent: packages already installed and a working plugin are skipped.
# Must run as root on Debian 12 (bookworm).
#
# Environment overrides:
#   COMPOSE_PLUGIN_SUITE   Debian suite to take docker-compose v2 from (trixie)
#   COMPOSE_PLUGIN_DIR     where to install the plugin (/usr/local/lib/docker/cli-plugins)
#   DEBIAN_MIRROR          Debian mirror URI (default: read from the apt sources)
set -euo pipefail

PROG=install-system
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

PACKAGES=(
  docker.io busybox-static docker-compose webhook wrk
  chromium chromium-driver postgresql git ca-certificates procps iproute2
  # .ci/build-image.sh's stand-in base; systemd-analyze for tests/test_contrib.py
  debootstrap systemd
)
COMPOSE_PLUGIN_SUITE=${COMPOSE_PLUGIN_SUITE:-trixie}
COMPOSE_PLUGIN_DIR=${COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
COMPOSE_PLUGIN=$COMPOSE_PLUGIN_DIR/docker-compose
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found (Debian needed)"

START=$SECONDS
TMP=$(mktemp -d "${TMPDIR:-/tmp}/install-system.XXXXXX")
POLICY_RC_CREATED=0
cleanup() {
  rm -rf "$TMP"
  if [[ $POLICY_RC_CREATED -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

# ---------------------------------------------------------------- packages --
missing=()
for p in "${PACKAGES[@]}"; do
  pkg_installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} packages already installed, skipping apt-get"
else
  log "missing packages: ${missing[*]}"
  # Keep package postinsts from starting daemons (dockerd, postgresql):
  # CI starts its own private instances.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    log "installing a temporary /usr/sbin/policy-rc.d (exit 101) so no service starts"
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  log "apt-get update"
  apt-get update -q
  log "apt-get install --no-install-recommends ${missing[*]}"
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
  for p in "${PACKAGES[@]}"; do
    pkg_installed "$p" || die "package $p still not installed"
  done
  log "packages installed"
fi

# ----------------------------------------------------- compose v2 plugin --
plugin_ok() {
  [[ -x $COMPOSE_PLUGIN ]] || return 1
  local v
  v=$("$COMPOSE_PLUGIN" version --short 2>/dev/null) || return 1
  [[ $v == 2.* || $v == v2.* ]]
}

# Print the Debian (non-security) mirror URI the machine's own sources use.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    # deb822: first "URIs:" value that is not the security archive.
    uri=$(awk 'tolower($1)=="uris:" { for (i=2;i<=NF;i++) if ($i !~ /security/) { print $i; exit } }' "$f")
    if [[ -n $uri ]]; then echo "${uri%/}"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    # one-line format: deb [opts] URI suite components...
    uri=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
      awk '$1=="deb" && $2 !~ /security/ && ($3 ~ /^(bookworm|stable|trixie)/) { print $2; exit }')
    if [[ -n $uri ]]; then echo "${uri%/}"; return; fi
  done
  echo "http://deb.debian.org/debian"
}

install_compose_plugin() {
  local mirror suite=$COMPOSE_PLUGIN_SUITE
  mirror=$(debian_mirror)
  log "fetching docker-compose (v2) from $mirror $suite main"
  local lists=$TMP/lists cache=$TMP/cache dl=$TMP/dl x=$TMP/x
  mkdir -p "$lists/partial" "$cache/archives/partial" "$dl" "$x"
  # apt downloads as the unprivileged _apt user when it can
  chmod 755 "$TMP"
  if id _apt >/dev/null 2>&1; then chown _apt "$lists/partial" "$dl"; fi

  write_sources() { # $1: signing option line
    cat >"$TMP/private.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite
Components: main
$1
EOF
  }
  local -a aptopts=(
    -o "Dir::Etc::sourcelist=$TMP/private.sources"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$lists"
    -o "Dir::Cache=$cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0"
    -o "Acquire::Languages=none"
    -o "Acquire::Check-Valid-Until=false"
  )

  write_sources "Signed-By: $KEYRING"
  if ! apt-get "${aptopts[@]}" update -q >"$TMP/update.log" 2>&1 ||
       grep -qE 'NO_PUBKEY|not signed|EXPKEYSIG|is not signed' "$TMP/update.log"; then
    cat "$TMP/update.log" >&2
    log "$suite not verifiable with $KEYRING; retrying with Trusted: yes (private list only)"
    rm -rf "$lists"; mkdir -p "$lists/partial"
    if id _apt >/dev/null 2>&1; then chown _apt "$lists/partial"; fi
    write_sources "Trusted: yes"
    apt-get "${aptopts[@]}" update -q >&2 || die "apt-get update for $suite failed"
  else
    sed 's/^/  /' "$TMP/update.log" >&2
  fi

  (cd "$dl" && apt-get "${aptopts[@]}" download docker-compose >&2) ||
    die "apt-get download docker-compose ($suite) failed"
  local deb
  deb=$(ls "$dl"/docker-compose_*.deb 2>/dev/null | head -n1)
  [[ -n $deb ]] || die "no docker-compose .deb downloaded"
  log "downloaded $(basename "$deb")"
  dpkg -x "$deb" "$x"
  local src=$x/usr/libexec/docker/cli-plugins/docker-compose
  [[ -f $src ]] || die "$src not in $(basename "$deb")"
  install -d -m 755 "$COMPOSE_PLUGIN_DIR"
  install -m 755 "$src" "$COMPOSE_PLUGIN.new"
  mv -f "$COMPOSE_PLUGIN.new" "$COMPOSE_PLUGIN"
  log "installed $COMPOSE_PLUGIN"
}

if plugin_ok; then
  log "compose v2 plugin already at $COMPOSE_PLUGIN ($("$COMPOSE_PLUGIN" version --short)), skipping"
else
  install_compose_plugin
  plugin_ok || die "$COMPOSE_PLUGIN does not run / is not v2"
fi

# ------------------------------------------------------------------ verify --
fail=0
check() { # description, command...  (first stdout line is shown; stderr
  # only on failure: e.g. Debian's chromium wrapper prints a harmless shell
  # error on stderr when /dev/shm is mounted twice)
  local desc=$1 out; shift
  if out=$("$@" 2>"$TMP/check.err"); then
    log "ok   $desc: $(printf '%s' "$out" | grep -v '^$' | head -n1)"
  else
    log "FAIL $desc: $(cat - "$TMP/check.err" <<<"$out" | tail -n3 | tr '\n' ' ')"
    fail=1
  fi
}
expect() { # description, regex, command...
  local desc=$1 re=$2 out; shift 2
  out=$("$@" 2>&1 || true)
  if [[ $out =~ $re ]]; then
    log "ok   $desc: $(printf '%s' "$out" | grep -v '^$' | head -n1)"
  else
    log "FAIL $desc: expected /$re/, got: $(printf '%s' "$out" | head -n3 | tr '\n' ' ')"
    fail=1
  fi
}

# Every docker client on the machine (/usr/local/bin/docker may shadow
# Debian's /usr/bin/docker) must find the v2 plugin.
declare -A seen=()
for d in $(type -ap docker) /usr/bin/docker /usr/local/bin/docker; do
  [[ -x $d ]] || continue
  r=$(readlink -f "$d"); [[ -z ${seen[$r]:-} ]] || continue; seen[$r]=1
  expect "$d compose version" 'version v?2\.' "$d" compose version
done
expect "docker-compose (v1) version" 'version 1\.29\.' /usr/bin/docker-compose --version
check  "dockerd --version" dockerd --version
check  "containerd --version" containerd --version
check  "runc --version" runc --version
if [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 &&
   /bin/busybox true; then
  log "ok   /bin/busybox is static: $(/bin/busybox | head -n1)"
else
  log "FAIL /bin/busybox missing or not static"; fail=1
fi
expect "wrk" '^wrk .*[0-9]+\.[0-9]+' wrk --version
check  "webhook -version" webhook -version
check  "chromium --version" chromium --version
check  "chromedriver --version" chromedriver --version
if initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1) && [[ -x $initdb ]]; then
  log "ok   initdb: $initdb ($("$initdb" --version))"
else
  log "FAIL no /usr/lib/postgresql/*/bin/initdb"; fail=1
fi
check  "git" git --version
check  "debootstrap" debootstrap --version
check  "systemd-analyze" systemd-analyze --version
check  "ip" ip -V

[[ $fail -eq 0 ]] || die "verification failed"
log "done in $((SECONDS - START))s"
