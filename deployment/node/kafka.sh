# shellcheck shell=bash
# A Kafka broker (and KRaft controller): Java, its jars, its formatted log folder, its unit.
# Settings: NODE_HOST, NODE_ID, KAFKA_CLUSTER_ID, MAVEN_REPOSITORY. Written before this
# runs: /etc/discorecs/kafka/*, /etc/systemd/system/discorecs-kafka.service.
# shellcheck disable=SC2154

ensure_runtime
ensure_user
install_app
install_jars kafka kafka
mkdir -p /var/lib/discorecs/kafka && chown -R discorecs: /var/lib/discorecs/kafka

# A formatted log folder belongs to one node id of one cluster: never renumber it.
meta=/var/lib/discorecs/kafka/meta.properties
if [[ -f "$meta" ]]; then
  formatted_id=$(sed -n 's/^node.id=//p' "$meta")
  [[ "$formatted_id" == "$NODE_ID" ]] || fail "this broker's log folder was formatted as \
node $formatted_id, not $NODE_ID: the node ids in deploy.sh's state folder were changed"
fi
runuser -u discorecs -- java -cp "$JARS/kafka/*" kafka.tools.StorageTool format \
  --cluster-id "$KAFKA_CLUSTER_ID" --config /etc/discorecs/kafka/server.properties \
  --ignore-formatted >/dev/null
restart_units discorecs-kafka.service
say "broker $NODE_ID started"
