# shellcheck shell=bash
# shellcheck disable=SC2153  # the upper-case settings come from clusters.env
# The steps of deployment/deploy.sh. Every command that touches AWS or a node goes through
# `run` or `remote`, which print it instead under --dry-run.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf '%s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

# Run a command, or print it (shell-quoted) under --dry-run.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    local quoted=() arg
    for arg in "$@"; do quoted+=("$(printf '%q' "$arg")"); done
    printf '+ %s\n' "${quoted[*]}"
  else
    "$@"
  fi
}

# Run a script on node N (1-based) of a cluster, or print it under --dry-run.
remote() {
  local cluster="$1" node="$2" script="$3"
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf "+ peg sshcmd-node %s %s <<'REMOTE'\n%s\nREMOTE\n" "$cluster" "$node" "$script"
  else
    peg sshcmd-node "$cluster" "$node" "$script"
  fi
}

kafka_cluster() { printf '%s-kafka' "$CLUSTER_PREFIX"; }
spark_cluster() { printf '%s-spark' "$CLUSTER_PREFIX"; }
cassandra_cluster() { printf '%s-cassandra' "$CLUSTER_PREFIX"; }

build_dir() {
  local dir="${DISCORECS_DEPLOY_BUILD:-$DEPLOY_DIR/build}"
  mkdir -p "$dir"
  printf '%s' "$dir"
}

# Private DNS names of a cluster's nodes, one per line, as `peg fetch` stored them
# (placeholders under --dry-run, where no cluster exists).
nodes() {
  local cluster="$1" count="$2" file
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    for ((i = 1; i <= count; i++)); do printf '%s-%d.internal\n' "$cluster" "$i"; done
    return
  fi
  file="${PEGASUS_HOME:-$HOME/.pegasus}/tmp/$cluster/private_dns"
  [[ -s "$file" ]] || die "no node list for $cluster at $file: run the 'up' step first"
  cat "$file"
}

require_aws_settings() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    : "${SUBNET_ID:=subnet-EXAMPLE}" "${SECURITY_GROUP_ID:=sg-EXAMPLE}" "${KEY_NAME:=my-key}"
    return
  fi
  local missing=()
  [[ -n "$SUBNET_ID" ]] || missing+=(SUBNET_ID)
  [[ -n "$SECURITY_GROUP_ID" ]] || missing+=(SECURITY_GROUP_ID)
  [[ -n "$KEY_NAME" ]] || missing+=(KEY_NAME)
  [[ ${#missing[@]} -eq 0 ]] || die "set ${missing[*]} (in the environment or clusters.env)"
  command -v peg >/dev/null || die "Pegasus' peg is not on PATH: see DEPLOYMENT_README.md"
  [[ -n "${AWS_ACCESS_KEY_ID:-}${AWS_PROFILE:-}" ]] \
    || die "no AWS credentials in the environment (AWS_PROFILE or AWS_ACCESS_KEY_ID)"
}

# A Pegasus instance definition.
instance_file() {
  local path="$1" cluster="$2" role="$3" count="$4" type="$5" volume="$6"
  {
    printf 'purchase_type: on_demand\n'
    printf 'subnet_id: %s\n' "$SUBNET_ID"
    printf 'num_instances: %s\n' "$count"
    printf 'key_name: %s\n' "$KEY_NAME"
    printf 'security_group_ids: %s\n' "$SECURITY_GROUP_ID"
    printf 'instance_type: %s\n' "$type"
    printf 'tag_name: %s\n' "$cluster"
    printf 'vol_size: %s\n' "$volume"
    printf 'role: %s\n' "$role"
    printf 'use_eips: false\n'
    if [[ -n "$IMAGE_ID" ]]; then printf 'image: %s\n' "$IMAGE_ID"; fi
  } >"$path"
  say "instance definition $path:"
  sed 's/^/    /' "$path"
}

step_up() {
  require_aws_settings
  local dir
  dir="$(build_dir)"
  instance_file "$dir/kafka.yml" "$(kafka_cluster)" master "$KAFKA_NODES" \
    "$KAFKA_INSTANCE_TYPE" "$KAFKA_VOLUME_GB"
  instance_file "$dir/spark-master.yml" "$(spark_cluster)" master 1 \
    "$SPARK_MASTER_INSTANCE_TYPE" "$SPARK_VOLUME_GB"
  instance_file "$dir/spark-workers.yml" "$(spark_cluster)" worker "$SPARK_WORKERS" \
    "$SPARK_INSTANCE_TYPE" "$SPARK_VOLUME_GB"
  instance_file "$dir/cassandra.yml" "$(cassandra_cluster)" master "$CASSANDRA_NODES" \
    "$CASSANDRA_INSTANCE_TYPE" "$CASSANDRA_VOLUME_GB"
  for definition in kafka spark-master spark-workers cassandra; do
    run peg up "$dir/$definition.yml"
  done
  for cluster in "$(kafka_cluster)" "$(spark_cluster)" "$(cassandra_cluster)"; do
    run peg fetch "$cluster"
    run peg install "$cluster" ssh
    run peg install "$cluster" aws
    run peg install "$cluster" environment
  done
}

JAVA_SETUP='sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless python3-venv'

step_kafka() {
  local cluster voters="" i=0 node
  cluster="$(kafka_cluster)"
  mapfile -t brokers < <(nodes "$cluster" "$KAFKA_NODES")
  for node in "${brokers[@]}"; do
    i=$((i + 1))
    voters+="${voters:+,}$i@$node:9093"
  done
  # One cluster id for every node (KRaft formats each node's storage with it).
  local cluster_id="${KAFKA_CLUSTER_ID:-}"
  if [[ -z "$cluster_id" ]]; then
    cluster_id="$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  fi
  local name="kafka_${KAFKA_SCALA_VERSION}-${KAFKA_VERSION}"
  i=0
  for node in "${brokers[@]}"; do
    i=$((i + 1))
    remote "$cluster" "$i" "set -euo pipefail
$JAVA_SETUP
cd /opt && sudo curl -fsSLO https://archive.apache.org/dist/kafka/$KAFKA_VERSION/$name.tgz
sudo tar xzf $name.tgz && sudo ln -sfn /opt/$name /opt/kafka && sudo mkdir -p /data/kafka
sudo tee /opt/kafka/config/discorecs.properties >/dev/null <<'PROPERTIES'
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://$node:9092,CONTROLLER://$node:9093
advertised.listeners=PLAINTEXT://$node:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=/data/kafka
num.partitions=$TOPIC_PARTITIONS
default.replication.factor=$TOPIC_REPLICATION
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
log.retention.hours=168
PROPERTIES
sudo /opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t $cluster_id -c /opt/kafka/config/discorecs.properties
sudo systemd-run --unit kafka --property=Restart=always /opt/kafka/bin/kafka-server-start.sh /opt/kafka/config/discorecs.properties"
  done
}

step_cassandra() {
  local cluster i=0 node seeds
  cluster="$(cassandra_cluster)"
  mapfile -t members < <(nodes "$cluster" "$CASSANDRA_NODES")
  seeds="$(printf '%s\n' "${members[@]}" | head -n 2 | paste -sd, -)"
  local name="apache-cassandra-$CASSANDRA_VERSION"
  for node in "${members[@]}"; do
    i=$((i + 1))
    # One node at a time: a node joins the ring only when the previous one is up (UN).
    remote "$cluster" "$i" "set -euo pipefail
$JAVA_SETUP
cd /opt && sudo curl -fsSLO https://archive.apache.org/dist/cassandra/$CASSANDRA_VERSION/$name-bin.tar.gz
sudo tar xzf $name-bin.tar.gz && sudo ln -sfn /opt/$name /opt/cassandra
conf=/opt/cassandra/conf/cassandra.yaml
sudo sed -i \\
  -e \"s/^cluster_name:.*/cluster_name: '$CLUSTER_PREFIX'/\" \\
  -e \"s/- seeds:.*/- seeds: \\\"$seeds\\\"/\" \\
  -e \"s/^listen_address:.*/listen_address: $node/\" \\
  -e \"s/^rpc_address:.*/rpc_address: $node/\" \\
  -e \"s/^endpoint_snitch:.*/endpoint_snitch: GossipingPropertyFileSnitch/\" \\
  -e \"s/^batch_size_warn_threshold:.*/batch_size_warn_threshold: 320KiB/\" \\
  -e \"s/^batch_size_fail_threshold:.*/batch_size_fail_threshold: 320KiB/\" \"\$conf\"
printf 'dc=%s\\nrack=rack1\\n' '$CASSANDRA_DC' | sudo tee /opt/cassandra/conf/cassandra-rackdc.properties
sudo systemd-run --unit cassandra --property=Restart=always /opt/cassandra/bin/cassandra -f -R
until /opt/cassandra/bin/nodetool status 2>/dev/null | grep -q \"UN  $node\"; do sleep 5; done"
  done
}

step_spark() {
  local cluster master i=0 node
  cluster="$(spark_cluster)"
  mapfile -t spark_nodes < <(nodes "$cluster" "$((SPARK_WORKERS + 1))")
  master="${spark_nodes[0]}"
  local name="spark-$SPARK_VERSION-bin-hadoop3"
  for node in "${spark_nodes[@]}"; do
    i=$((i + 1))
    local start="sudo /opt/spark/sbin/start-worker.sh spark://$master:7077"
    [[ $i -eq 1 ]] && start="sudo /opt/spark/sbin/start-master.sh --host $master"
    remote "$cluster" "$i" "set -euo pipefail
$JAVA_SETUP
cd /opt && sudo curl -fsSLO https://archive.apache.org/dist/spark/spark-$SPARK_VERSION/$name.tgz
sudo tar xzf $name.tgz && sudo ln -sfn /opt/$name /opt/spark
$start"
  done
}

# The settings every discorecs process on the clusters reads (no secrets: credentials come
# from the nodes' environment or instance roles).
settings_env() {
  local kafka_nodes cassandra_nodes master
  kafka_nodes="$(nodes "$(kafka_cluster)" "$KAFKA_NODES" | sed 's/$/:9092/' | paste -sd, -)"
  cassandra_nodes="$(nodes "$(cassandra_cluster)" "$CASSANDRA_NODES" | paste -sd, -)"
  master="$(nodes "$(spark_cluster)" 1 | head -n 1)"
  cat <<SETTINGS
DISCORECS_KAFKA_BOOTSTRAP_SERVERS=$kafka_nodes
DISCORECS_KAFKA_REPLICATION_FACTOR=$TOPIC_REPLICATION
DISCORECS_KAFKA_MIN_INSYNC_REPLICAS=2
DISCORECS_CASSANDRA_CONTACT_POINTS=$cassandra_nodes
DISCORECS_CASSANDRA_PROTOCOL_VERSION=4
DISCORECS_CASSANDRA_REPLICATION=NetworkTopologyStrategy:$CASSANDRA_DC=$CASSANDRA_RF
DISCORECS_CASSANDRA_LOCAL_DC=$CASSANDRA_DC
DISCORECS_CASSANDRA_READ_CONSISTENCY=LOCAL_QUORUM
DISCORECS_CASSANDRA_WRITE_CONSISTENCY=LOCAL_QUORUM
DISCORECS_DATA_ROOT=$DATA_ROOT
DISCORECS_SPARK_MASTER=spark://$master:7077
DISCORECS_SPARK_SHUFFLE_PARTITIONS=400
PYSPARK_PYTHON=$APP_DIR/.venv/bin/python
SETTINGS
}

step_app() {
  local cluster dir archive i
  cluster="$(spark_cluster)"
  dir="$(build_dir)"
  archive="$dir/discorecs.tar.gz"
  run git -C "$DEPLOY_DIR/.." archive --format=tar.gz -o "$archive" HEAD
  local settings
  settings="$(settings_env)"
  for ((i = 1; i <= SPARK_WORKERS + 1; i++)); do
    run peg scp to-rem "$cluster" "$i" "$archive" /tmp/discorecs.tar.gz
    remote "$cluster" "$i" "set -euo pipefail
sudo mkdir -p $APP_DIR && sudo tar xzf /tmp/discorecs.tar.gz -C $APP_DIR
sudo python3 -m venv $APP_DIR/.venv
sudo $APP_DIR/.venv/bin/pip install -q -r $APP_DIR/requirements.txt
sudo $APP_DIR/.venv/bin/pip install -q --no-deps $APP_DIR
sudo tee /etc/discorecs.env >/dev/null <<'SETTINGS'
$settings
SETTINGS"
  done
  local packages="org.apache.spark:spark-sql-kafka-0-10_2.13:$SPARK_VERSION"
  packages+=",org.apache.hadoop:hadoop-aws:3.5.0"
  remote "$cluster" 1 "set -euo pipefail
set -a && . /etc/discorecs.env && set +a
cd $APP_DIR
.venv/bin/discorecs init-schema
.venv/bin/discorecs create-topics --partitions $TOPIC_PARTITIONS --replication $TOPIC_REPLICATION
# The producers read the catalog and users from the data root itself.
sudo systemd-run --unit discorecs-producers --property=Restart=on-failure \\
  --setenv=RATE=$PRODUCER_RATE \\
  --property=EnvironmentFile=/etc/discorecs.env \\
  $APP_DIR/kafka_cluster_scripts/start_kafka_producers.sh both
sudo systemd-run --unit discorecs-stream --property=Restart=always \\
  --property=EnvironmentFile=/etc/discorecs.env \\
  /opt/spark/bin/spark-submit --master \"\$DISCORECS_SPARK_MASTER\" \\
  --packages $packages $APP_DIR/streaming/job.py"
}

step_schedule() {
  local cluster packages="org.apache.spark:spark-sql-kafka-0-10_2.13:$SPARK_VERSION"
  packages+=",org.apache.hadoop:hadoop-aws:3.5.0"
  cluster="$(spark_cluster)"
  remote "$cluster" 1 "set -euo pipefail
sudo tee /etc/systemd/system/discorecs-nightly.service >/dev/null <<'UNIT'
[Unit]
Description=discorecs nightly batch (state, scores, rankings, friends, releases, serving)
[Service]
Type=oneshot
EnvironmentFile=/etc/discorecs.env
WorkingDirectory=$APP_DIR
ExecStart=/bin/sh -c '/opt/spark/bin/spark-submit --master \"\$DISCORECS_SPARK_MASTER\" --packages $packages --driver-memory 8g --executor-memory 48g $APP_DIR/spark_jobs/nightly.py'
UNIT
sudo tee /etc/systemd/system/discorecs-nightly.timer >/dev/null <<'UNIT'
[Unit]
Description=Run the discorecs nightly batch at $NIGHTLY_AT UTC
[Timer]
OnCalendar=*-*-* $NIGHTLY_AT:00 UTC
Persistent=true
[Install]
WantedBy=timers.target
UNIT
sudo systemctl daemon-reload
sudo systemctl enable --now discorecs-nightly.timer"
}

step_down() {
  if [[ "${DRY_RUN:-0}" != 1 && "${YES:-0}" != 1 ]]; then
    read -r -p "terminate every instance of $CLUSTER_PREFIX-{kafka,spark,cassandra}? [y/N] " answer
    [[ "$answer" == y || "$answer" == Y ]] || die "nothing terminated"
  fi
  for cluster in "$(kafka_cluster)" "$(spark_cluster)" "$(cassandra_cluster)"; do
    run peg down "$cluster"
  done
}
