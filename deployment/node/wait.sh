# shellcheck shell=bash
# Wait for a service of this node. Settings: NODE_HOST, WAIT_PORT, WAIT_SECONDS, WAIT_UNIT.
# shellcheck disable=SC2154
wait_for_port "$NODE_HOST" "$WAIT_PORT" "$WAIT_SECONDS" "$WAIT_UNIT"
