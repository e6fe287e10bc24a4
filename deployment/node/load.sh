# shellcheck shell=bash
# On the Spark master, before the producers start: the schema (NetworkTopologyStrategy, the
# configured replication), the topics, the catalog from the releases dump and the users, onto
# the cluster's data root. Settings: DUMP, USERS, USERS_SEED, TOPIC_PARTITIONS,
# TOPIC_REPLICATION. Re-running publishes a new catalog and the same users again.
# shellcheck disable=SC2154

# Run a discorecs command as the service user, with the settings the units read.
as_service() {
  runuser -u discorecs -- bash -c 'set -a; . /etc/discorecs/discorecs.env; \
. /etc/discorecs/node.env; set +a; cd /var/lib/discorecs; exec "$@"' as_service "$@"
}

say "schema"
as_service "$VENV/bin/discorecs" init-schema
say "topics"
as_service "$VENV/bin/discorecs" create-topics --partitions "$TOPIC_PARTITIONS" \
  --replication "$TOPIC_REPLICATION"
say "catalog from $DUMP"
as_service "$VENV/bin/discorecs" ingest-dump "$DUMP"
say "$USERS users"
as_service "$VENV/bin/discorecs" generate-users --users "$USERS" --seed "$USERS_SEED"
