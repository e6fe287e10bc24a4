#!/usr/bin/env bash
# Spin up discorecs' three clusters on AWS with Pegasus, install and start everything, load
# the catalog and the users, and schedule the nightly batch.
#
#   deployment/deploy.sh [--dry-run] STEP...
#
# Steps, in the order `all` runs them:
#   preflight  check peg (patched to take AWS_IMAGE), the AWS settings, ssh-agent; hint quotas
#   up         create the Kafka, Spark and Cassandra clusters (peg up), fetch their addresses,
#              wait for ssh, give the Spark nodes their instance role
#   kafka      Apache Kafka (KRaft, every broker a controller voter) as a systemd unit
#   cassandra  Apache Cassandra, one datacenter, nodes started one at a time
#   spark      the project's virtualenv (PySpark = Spark) on every Spark node, the standalone
#              master and workers as systemd units, the units of the jobs and the site
#   load       on the Spark master: schema (NetworkTopologyStrategy), topics, the catalog
#              from the releases dump (DUMP), the users, onto the data root
#   app        on the Spark master: start the producers, the streaming job and the site
#   schedule   the nightly batch's systemd timer (NIGHTLY_AT, UTC)
# Other steps:
#   nightly    run the nightly batch now, as the timer would, and wait for it
#   down       terminate every instance of the three clusters (asks first on a terminal
#              unless YES=1; unattended otherwise)
#
# --dry-run prints every command and every node script instead of running them.
# Settings: deployment/clusters.env, overridable from the environment. Versions: the ones
# discorecs/stack.py, the jar locks and requirements.txt pin (the laptop's own).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deployment/clusters.env
source "${DISCORECS_DEPLOY_ENV:-$here/clusters.env}"
# shellcheck source=deployment/lib.sh
source "$here/lib.sh"

DRY_RUN=0
steps=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    preflight|up|kafka|cassandra|spark|load|app|schedule|nightly|down) steps+=("$arg") ;;
    all) steps+=(preflight up kafka cassandra spark load app schedule) ;;
    *) die "unknown step '$arg'; see deployment/deploy.sh --help" ;;
  esac
done
[[ ${#steps[@]} -gt 0 ]] || die "name a step (or all); see deployment/deploy.sh --help"
# Pegasus and the aws CLI read the region from the environment, wherever it was set.
export DRY_RUN AWS_DEFAULT_REGION
[[ -x "$PYTHON" ]] || die "no project virtualenv at $PYTHON: run \`make venv\` first"
# The versions every node runs, from the one place the local installer reads them.
eval "$("$PYTHON" "$ROOT_DIR/discorecs/stack.py")"
say "discorecs on Kafka $KAFKA_VERSION, Cassandra $CASSANDRA_VERSION, Spark $SPARK_VERSION, Java $JAVA_VERSION"

for step in "${steps[@]}"; do
  say "== $step"
  "step_$step"
done
