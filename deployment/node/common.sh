# shellcheck shell=bash
# What every node script needs. deploy.sh sends a node, on the standard input of
# `sudo bash -s`: `set -euo pipefail`, the step's settings as NAME=value lines, the files
# the step writes (configuration, systemd units, the project's source), this file, then the
# step's own script. Every step can be run again: it converges, it does not append.
# shellcheck disable=SC2154,SC2034  # settings come from deploy.sh; names used by step scripts

APP=/opt/discorecs/app
VENV=/opt/discorecs/venv
JARS=/opt/discorecs/jvm

say() { printf '[%s] %s\n' "$NODE_HOST" "$*"; }
fail() { printf '[%s] error: %s\n' "$NODE_HOST" "$*" >&2; exit 1; }

# Java 17 and Python 3.11+ with venv, from the image's packages when missing (Ubuntu 24.04
# has both; see DEPLOYMENT_README.md, "Images").
ensure_runtime() {
  local missing=() java_major
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
  [[ "${java_major:-0}" -ge 17 ]] || missing+=(openjdk-17-jre-headless)
  python3 -c 'import ensurepip, sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || missing+=(python3 python3-venv)
  command -v curl >/dev/null || missing+=(curl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
  [[ "${java_major:-0}" -ge 17 ]] || fail "java is Java ${java_major:-missing}; Java 17 is needed"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "python3 is $(python3 --version 2>&1); 3.11+ is needed: use an Ubuntu 24.04 image"
}

# The service user, and the folders it owns (/var/lib/discorecs is also its home).
ensure_user() {
  id discorecs >/dev/null 2>&1 \
    || useradd --system --home-dir /var/lib/discorecs --shell /usr/sbin/nologin discorecs
  mkdir -p /var/lib/discorecs /var/log/discorecs /etc/discorecs "$JARS"
  chown discorecs: /var/lib/discorecs /var/log/discorecs
}

# The project's source, sent as /tmp/discorecs-app.tar.gz, replaces the previous one.
install_app() {
  rm -rf "$APP.new" && mkdir -p "$APP.new"
  tar xzf /tmp/discorecs-app.tar.gz -C "$APP.new"
  rm -rf "$APP" && mv "$APP.new" "$APP" && rm -f /tmp/discorecs-app.tar.gz
}

# A locked bundle of jars (discorecs/services/locks/<bundle>.lock), fetched from
# $MAVEN_REPOSITORY and checked file by file, linked as $JARS/<name>.
install_jars() {
  local bundle=$1 name=$2 folder
  folder=$(PYTHONPATH="$APP" python3 -m discorecs.services.maven install "$bundle" \
    --repository "$MAVEN_REPOSITORY" --cache /opt/discorecs)
  ln -sfn "$folder" "$JARS/$name"
}

# Enable units and (re)start them, so a changed configuration takes effect.
restart_units() {
  systemctl daemon-reload
  systemctl enable "$@" >/dev/null 2>&1
  systemctl restart "$@"
}

# Wait until host:port accepts connections; on time-out, show the unit's journal and fail.
wait_for_port() {
  local host=$1 port=$2 seconds=$3 unit=$4 deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    if [[ $SECONDS -ge $deadline ]]; then
      journalctl -u "$unit" -n 40 --no-pager >&2 || true
      fail "$unit did not listen on $host:$port within $seconds s (its journal is above)"
    fi
    sleep 2
  done
  say "$unit listens on $host:$port"
}
