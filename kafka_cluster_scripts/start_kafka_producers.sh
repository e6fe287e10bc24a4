#!/usr/bin/env bash
# Create the event topics and start the collection and activity producers.
#
#   kafka_cluster_scripts/start_kafka_producers.sh [collection|activity|both]
#
# Settings come from the environment (all optional):
#   RATE=1000          events per second, per producer
#   DURATION=60        seconds to run (default: until Ctrl-C); or COUNT=N events per producer
#   SEED=...           event sequence seed (default: from the clock)
#   ACTIVE_USERS=50000 users the events are for
#   PARTITIONS=6 REPLICATION=1   for topic creation (existing topics are left as they are)
#   DISCORECS=...      the discorecs command (default: the project's .venv, else PATH)
# plus the DISCORECS_* settings (broker address, data root, ...).
# Ctrl-C stops both producers; each flushes what it has in flight and prints its summary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
which_producers="${1:-both}"
case "$which_producers" in
  collection|activity) producers=("$which_producers") ;;
  both) producers=(collection activity) ;;
  *) echo "usage: $0 [collection|activity|both]" >&2; exit 2 ;;
esac

if [[ -n "${DISCORECS:-}" ]]; then
  discorecs="$DISCORECS"
elif [[ -x "$here/../.venv/bin/discorecs" ]]; then
  discorecs="$here/../.venv/bin/discorecs"
else
  discorecs="discorecs"
fi

"$discorecs" create-topics --partitions "${PARTITIONS:-6}" --replication "${REPLICATION:-1}"

args=(--rate "${RATE:-1000}")
[[ -n "${DURATION:-}" ]] && args+=(--duration "$DURATION")
[[ -n "${COUNT:-}" ]] && args+=(--count "$COUNT")
[[ -n "${ACTIVE_USERS:-}" ]] && args+=(--active-users "$ACTIVE_USERS")

pids=()
# shellcheck disable=SC2317  # called by the trap below
stop() { kill -INT "${pids[@]}" 2>/dev/null || true; }
trap stop INT TERM

offset=0
for producer in "${producers[@]}"; do
  seed_args=()
  # Distinct seeds so the two producers never emit the same event ids.
  [[ -n "${SEED:-}" ]] && seed_args=(--seed "$((SEED + offset))")
  "$discorecs" produce "$producer" "${args[@]}" "${seed_args[@]}" &
  pids+=($!)
  offset=$((offset + 1))
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
