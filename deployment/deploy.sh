#!/usr/bin/env bash
# Spin up and configure discorecs' three clusters on AWS with Pegasus, deploy the project,
# and install the nightly schedule.
#
#   deployment/deploy.sh [--dry-run] STEP...
#
# Steps, in the order `all` runs them:
#   up         create the Kafka, Spark and Cassandra clusters (peg up), fetch their addresses
#   kafka      install Apache Kafka in KRaft mode (no ZooKeeper) and start the brokers
#   cassandra  install Apache Cassandra, one datacenter, and start the nodes one at a time
#   spark      install Spark 4 (standalone master and workers) and start them
#   app        ship the package to the Spark nodes, apply the schema (NetworkTopologyStrategy,
#              RF 3), create the topics, start the producers and the streaming job
#   schedule   install the nightly batch (a systemd timer on the Spark master)
#   down       terminate every instance of the three clusters (asks first unless YES=1)
#
# --dry-run prints every command instead of running it (no AWS account needed).
# Settings: deployment/clusters.env, overridable from the environment.
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
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    up|kafka|cassandra|spark|app|schedule|down) steps+=("$arg") ;;
    all) steps+=(up kafka cassandra spark app schedule) ;;
    *) die "unknown step '$arg'; see deployment/deploy.sh --help" ;;
  esac
done
[[ ${#steps[@]} -gt 0 ]] || die "name a step (or all); see deployment/deploy.sh --help"
export DRY_RUN

for step in "${steps[@]}"; do
  say "== $step"
  "step_$step"
done
