# shellcheck shell=bash
# shellcheck disable=SC2153  # the upper-case settings come from clusters.env
# The steps of deployment/deploy.sh. Every command that touches AWS or a node goes through
# `run` or `on_node`, which print it instead under --dry-run.
#
# How a step reaches a node: Pegasus' `peg sshcmd-node CLUSTER N words...` joins and re-splits
# its words before ssh joins them again, so a script given as an argument loses its newlines
# and quoting. Scripts therefore travel on standard input, which Pegasus hands to ssh:
# `peg sshcmd-node CLUSTER N sudo bash -s` reads the step's settings, the files it writes (each
# in a quoted here-document), deployment/node/common.sh and deployment/node/<step>.sh.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
# What the nodes get of the project: the packages and what installs them.
APP_PATHS=(commands discorecs cassandra_schema spark_jobs streaming webapp kafka_cluster_scripts
  pyproject.toml requirements.txt README.md)

say() { printf '%s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

dry_run() { [[ "${DRY_RUN:-0}" == 1 ]]; }

# Run a command, or print it (shell-quoted) under --dry-run.
run() {
  if dry_run; then
    local quoted=() arg
    for arg in "$@"; do quoted+=("$(printf '%q' "$arg")"); done
    printf '+ %s\n' "${quoted[*]}"
  else
    "$@"
  fi
}

kafka_cluster() { printf '%s-kafka' "$CLUSTER_PREFIX"; }
spark_cluster() { printf '%s-spark' "$CLUSTER_PREFIX"; }
cassandra_cluster() { printf '%s-cassandra' "$CLUSTER_PREFIX"; }

# Pegasus keeps what `peg fetch` learnt under its own folder (the folder of the peg script).
peg_root() {
  if [[ -n "${PEG_ROOT:-}" ]]; then printf '%s' "$PEG_ROOT"; return; fi
  local peg
  peg="$(command -v peg)" || die "Pegasus' peg is not on PATH: see DEPLOYMENT_README.md"
  dirname "$peg"
}

build_dir() {
  local dir="${DISCORECS_DEPLOY_BUILD:-$DEPLOY_DIR/build}/$1"
  mkdir -p "$dir"
  printf '%s' "$dir"
}

# How many nodes a cluster is meant to have (used for --dry-run's placeholder addresses).
planned_nodes() {
  case "$1" in
    "$(kafka_cluster)") echo "$KAFKA_NODES" ;;
    "$(spark_cluster)") echo "$((SPARK_WORKERS + 1))" ;;
    "$(cassandra_cluster)") echo "$CASSANDRA_NODES" ;;
  esac
}

# The private addresses of a cluster's nodes in Pegasus' order (masters first), from the
# hostnames `peg fetch` stored: EC2 names a node by its private address (ip-10-0-1-23).
addresses() {
  local cluster="$1" file name i
  if dry_run; then
    local subnet
    case "$cluster" in
      *-kafka) subnet=1 ;;
      *-spark) subnet=2 ;;
      *) subnet=3 ;;
    esac
    for ((i = 1; i <= $(planned_nodes "$cluster"); i++)); do printf '10.0.%d.%d\n' "$subnet" "$((10 + i))"; done
    return
  fi
  file="$(peg_root)/tmp/$cluster/hostnames"
  [[ -s "$file" ]] || die "no node list for $cluster at $file: run the up step (peg fetch) first"
  while read -r name; do
    [[ "$name" =~ ^ip-([0-9]+)-([0-9]+)-([0-9]+)-([0-9]+)$ ]] \
      || die "$file: '$name' is not an EC2 private name (ip-10-0-1-23); the subnet must use \
IP-based host names (the default)"
    printf '%s.%s.%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}"
  done <"$file"
}

# A value kept in the state folder between runs, created by "$@" the first time.
state_value() {
  local name="$1"; shift
  if dry_run; then printf 'dry-run-%s' "$name"; return; fi
  local file="$DEPLOY_STATE/$name"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$DEPLOY_STATE"
    "$@" >"$file.new" && mv "$file.new" "$file"
  fi
  cat "$file"
}

# A broker's Kafka node id: the one it was given first (kept in the state folder by address),
# or the next free one. A re-fetch that lists the brokers in another order changes nothing.
kafka_node_id() {
  local address="$1" file="$DEPLOY_STATE/kafka-node-ids" id
  if dry_run; then return 1; fi
  mkdir -p "$DEPLOY_STATE" && touch "$file"
  id="$(awk -v a="$address" '$1 == a { print $2 }' "$file")"
  if [[ -z "$id" ]]; then
    id=$(($(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$file") + 1))
    printf '%s %s\n' "$address" "$id" >>"$file"
  fi
  printf '%s' "$id"
}

# Shell that writes files on the node (rendered by discorecs/services/node_files.py).
node_files() { "$PYTHON" -m discorecs.services.node_files "$@"; }

# Shell that writes each named unit of deployment/units/ into /etc/systemd/system/.
unit_files() {
  local pairs=() unit
  for unit in "$@"; do pairs+=("/etc/systemd/system/$unit=$DEPLOY_DIR/units/$unit"); done
  node_files files "${pairs[@]}"
}

# Shell that writes the project's source (the tracked and new files of this checkout) to
# /tmp/discorecs-app.tar.gz on the node; under --dry-run a placeholder.
app_archive() {
  printf "base64 -d >/tmp/discorecs-app.tar.gz <<'DISCORECS_ARCHIVE_END'\n"
  if dry_run; then
    printf '(the project source: %s, as tar.gz, base64)\n' "${APP_PATHS[*]}"
  else
    git -C "$ROOT_DIR" ls-files -z --cached --others --exclude-standard -- "${APP_PATHS[@]}" \
      | tar czf - -C "$ROOT_DIR" --null -T - | base64
  fi
  printf 'DISCORECS_ARCHIVE_END\n'
}

# Run deployment/node/STEP.sh on node N of a cluster as root, after the settings (NAME=value
# arguments) and the shell in FILES; under --dry-run print what would be sent.
on_node() {
  local cluster="$1" node="$2" step="$3" files="$4"
  shift 4
  local payload assignment
  payload="$(
    printf 'set -euo pipefail\n'
    for assignment in "$@"; do printf '%s=%q\n' "${assignment%%=*}" "${assignment#*=}"; done
    printf '%s\n' "$files"
    cat "$DEPLOY_DIR/node/common.sh" "$DEPLOY_DIR/node/$step.sh"
  )"
  if dry_run; then
    printf "+ peg sshcmd-node %s %s sudo bash -s <<'NODE'\n%s\nNODE\n" "$cluster" "$node" "$payload"
  else
    say "-- $step on $cluster node $node"
    peg sshcmd-node "$cluster" "$node" sudo bash -s <<<"$payload" \
      || die "$step failed on $cluster node $node (its output is above); fix it and run the step again"
  fi
}

vcpus() {
  case "$1" in
    *.large) echo 2 ;; *.xlarge) echo 4 ;; *.2xlarge) echo 8 ;; *.4xlarge) echo 16 ;;
    *.8xlarge) echo 32 ;; *) echo 0 ;;
  esac
}

# Pegasus picks hard-coded Ubuntu 18.04 images (Python 3.6) unless patched to take AWS_IMAGE;
# the image is Canonical's current Ubuntu 24.04 (Python 3.12, OpenJDK 17 packaged) unless set.
ensure_image() {
  if [[ -z "$AWS_IMAGE" ]] && ! dry_run; then
    AWS_IMAGE="$(aws ssm get-parameter --region "$AWS_DEFAULT_REGION" --query Parameter.Value \
      --output text \
      --name /aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id)" \
      || die "could not look up the Ubuntu 24.04 image; set AWS_IMAGE to an Ubuntu 24.04 AMI"
  fi
  export AWS_IMAGE="${AWS_IMAGE:-ami-ubuntu-24.04}"
}

step_preflight() {
  local problems=() name peg_util
  [[ -x "$PYTHON" ]] || problems+=("no project virtualenv at $PYTHON: run \`make venv\` first")
  if dry_run; then
    say "dry run: checks of peg, AWS settings and ssh-agent skipped"
  else
    if command -v peg >/dev/null || [[ -n "${PEG_ROOT:-}" ]]; then
      peg_util="$(peg_root)/util.sh"
    else
      problems+=("Pegasus' peg is not on PATH (DEPLOYMENT_README.md, \"Pegasus\")")
      peg_util=/nonexistent
    fi
    if [[ -f "$peg_util" ]] && ! grep -q 'AWS_IMAGE:-' "$peg_util"; then
      problems+=("Pegasus would start Ubuntu 18.04 (Python 3.6): cd $(dirname "$peg_util") && git apply $DEPLOY_DIR/pegasus-select-ami.patch")
    fi
    for name in AWS_DEFAULT_REGION KEY_NAME SUBNET_ID KAFKA_SECURITY_GROUP_ID \
      SPARK_SECURITY_GROUP_ID CASSANDRA_SECURITY_GROUP_ID DATA_ROOT; do
      [[ -n "${!name}" ]] || problems+=("set $name (in the environment or deployment/clusters.env)")
    done
    ssh-add -l >/dev/null 2>&1 \
      || problems+=("ssh-agent holds no key: eval \"\$(ssh-agent)\" && ssh-add ~/.ssh/$KEY_NAME.pem (Pegasus connects with ssh -A)")
    if [[ "$DATA_ROOT" == s3a://* && -z "$SPARK_INSTANCE_PROFILE" \
      && "$NODE_SETTINGS" != *DISCORECS_S3_ENDPOINT=* ]]; then
      problems+=("set SPARK_INSTANCE_PROFILE: the Spark nodes reach $DATA_ROOT by an instance role")
    fi
  fi
  if [[ ${#problems[@]} -gt 0 ]]; then
    printf 'deploy: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  local total=$((KAFKA_NODES * $(vcpus "$KAFKA_INSTANCE_TYPE") \
    + $(vcpus "$SPARK_MASTER_INSTANCE_TYPE") + SPARK_WORKERS * $(vcpus "$SPARK_INSTANCE_TYPE") \
    + CASSANDRA_NODES * $(vcpus "$CASSANDRA_INSTANCE_TYPE")))
  say "ready: $((KAFKA_NODES + SPARK_WORKERS + 1 + CASSANDRA_NODES)) instances, $total vCPUs on demand."
  say "  EC2 quota to check (Service Quotas, ${AWS_DEFAULT_REGION:-your region}): \"Running On-Demand"
  say "  Standard (A, C, D, H, I, M, R, T, Z) instances\" must allow $total vCPUs beyond what runs."
}

step_up() {
  ensure_image
  local dir template name cluster count i
  dir="$(build_dir templates)"
  for template in kafka spark-master spark-workers cassandra; do
    local text
    text="$(cat "$DEPLOY_DIR/templates/$template.yml")"
    for name in SUBNET_ID KEY_NAME CLUSTER_PREFIX KAFKA_NODES KAFKA_INSTANCE_TYPE \
      KAFKA_VOLUME_GB KAFKA_SECURITY_GROUP_ID SPARK_WORKERS SPARK_INSTANCE_TYPE \
      SPARK_MASTER_INSTANCE_TYPE SPARK_VOLUME_GB SPARK_SECURITY_GROUP_ID CASSANDRA_NODES \
      CASSANDRA_INSTANCE_TYPE CASSANDRA_VOLUME_GB CASSANDRA_SECURITY_GROUP_ID; do
      text="${text//"\${$name}"/${!name}}"
    done
    printf '%s\n' "$text" >"$dir/$template.yml"
    run peg up "$dir/$template.yml"
  done
  for cluster in "$(kafka_cluster)" "$(spark_cluster)" "$(cassandra_cluster)"; do
    run peg fetch "$cluster"
    dry_run && continue
    count="$(wc -l <"$(peg_root)/tmp/$cluster/public_dns")"
    for ((i = 1; i <= count; i++)); do
      local tries=0
      until peg sshcmd-node "$cluster" "$i" true </dev/null >/dev/null 2>&1; do
        tries=$((tries + 1))
        [[ $tries -lt 60 ]] || die "$cluster node $i does not answer ssh after 5 minutes"
        sleep 5
      done
    done
  done
  [[ -n "$SPARK_INSTANCE_PROFILE" ]] || return 0
  # Credentials by instance role: the Spark nodes reach the data bucket with no keys on disk.
  local ids id
  if dry_run; then ids="i-EXAMPLE"; else
    ids="$(aws ec2 describe-instances --region "$AWS_DEFAULT_REGION" --output text \
      --filters "Name=tag:Name,Values=$(spark_cluster)" Name=instance-state-name,Values=running \
      --query 'Reservations[].Instances[].InstanceId')"
  fi
  for id in $ids; do
    if dry_run || [[ -z "$(aws ec2 describe-iam-instance-profile-associations --region \
      "$AWS_DEFAULT_REGION" --filters "Name=instance-id,Values=$id" --output text \
      --query 'IamInstanceProfileAssociations[].AssociationId')" ]]; then
      run aws ec2 associate-iam-instance-profile --region "$AWS_DEFAULT_REGION" \
        --instance-id "$id" --iam-instance-profile "Name=$SPARK_INSTANCE_PROFILE"
    fi
  done
}

step_kafka() {
  local cluster voters="" address i ids=() cluster_id
  cluster="$(kafka_cluster)"
  mapfile -t brokers < <(addresses "$cluster")
  for ((i = 0; i < ${#brokers[@]}; i++)); do
    ids+=("$(kafka_node_id "${brokers[i]}" || echo "$((i + 1))")")
    voters+="${voters:+,}${ids[i]}@${brokers[i]}:9093"
  done
  cluster_id="$(state_value kafka-cluster-id "$PYTHON" -c \
    'from discorecs.services.broker import new_cluster_id; print(new_cluster_id())')"
  local replication=$((TOPIC_REPLICATION < ${#brokers[@]} ? TOPIC_REPLICATION : ${#brokers[@]}))
  for ((i = 0; i < ${#brokers[@]}; i++)); do
    address="${brokers[i]}"
    on_node "$cluster" "$((i + 1))" kafka "$(
      node_files kafka --node-id "${ids[i]}" --host "$address" --voters "$voters" \
        --partitions "$TOPIC_PARTITIONS" --replication "$replication" --heap "$KAFKA_HEAP"
      unit_files discorecs-kafka.service
      app_archive
    )" NODE_HOST="$address" NODE_ID="${ids[i]}" KAFKA_CLUSTER_ID="$cluster_id" \
      MAVEN_REPOSITORY="$MAVEN_REPOSITORY"
  done
  # The controller quorum forms once a majority of voters runs: wait after starting them all.
  for ((i = 0; i < ${#brokers[@]}; i++)); do
    on_node "$cluster" "$((i + 1))" wait "" NODE_HOST="${brokers[i]}" WAIT_PORT=9092 \
      WAIT_SECONDS=300 WAIT_UNIT=discorecs-kafka.service
  done
}

step_cassandra() {
  local cluster seeds i
  cluster="$(cassandra_cluster)"
  mapfile -t members < <(addresses "$cluster")
  # Two seeds (one in a one-node ring), kept between runs: seeds never bootstrap, so they
  # must stay the first nodes started.
  seeds="$(state_value cassandra-seeds printf '%s\n' "${members[@]:0:2}" | paste -sd, -)"
  dry_run && seeds="$(printf '%s\n' "${members[@]:0:2}" | paste -sd, -)"
  # One node at a time: a node joins the ring only after the one before answers CQL.
  for ((i = 0; i < ${#members[@]}; i++)); do
    on_node "$cluster" "$((i + 1))" cassandra "$(
      node_files cassandra --host "${members[i]}" --seeds "$seeds" \
        --cluster-name "$CLUSTER_PREFIX" --datacenter "$CASSANDRA_DC" --heap "$CASSANDRA_HEAP"
      unit_files discorecs-cassandra.service
      app_archive
    )" NODE_HOST="${members[i]}" MAVEN_REPOSITORY="$MAVEN_REPOSITORY" \
      TUNE_KERNEL="${TUNE_KERNEL:-1}"
  done
}

# The Spark master's address (the first node `peg fetch` lists: masters come first).
master_address() {
  local spark_nodes
  mapfile -t spark_nodes < <(addresses "$(spark_cluster)")
  printf '%s' "${spark_nodes[0]}"
}

# The settings every discorecs process on the Spark nodes reads (/etc/discorecs/discorecs.env;
# no secrets: credentials come from the instance role).
settings_env() {
  local kafka cassandra master
  kafka="$(addresses "$(kafka_cluster)" | sed 's/$/:9092/' | paste -sd, -)"
  cassandra="$(addresses "$(cassandra_cluster)" | paste -sd, -)"
  master="$(master_address)"
  local brokers replication
  brokers="$(addresses "$(kafka_cluster)" | wc -l)"
  replication=$((TOPIC_REPLICATION < brokers ? TOPIC_REPLICATION : brokers))
  cat <<SETTINGS
DISCORECS_KAFKA_BOOTSTRAP_SERVERS=$kafka
DISCORECS_KAFKA_REPLICATION_FACTOR=$replication
DISCORECS_KAFKA_MIN_INSYNC_REPLICAS=$((replication > 1 ? replication - 1 : 1))
DISCORECS_CASSANDRA_CONTACT_POINTS=$cassandra
DISCORECS_CASSANDRA_REPLICATION=NetworkTopologyStrategy:$CASSANDRA_DC=$CASSANDRA_RF
DISCORECS_CASSANDRA_LOCAL_DC=$CASSANDRA_DC
DISCORECS_DATA_ROOT=${DATA_ROOT:-s3a://EXAMPLE-BUCKET/discorecs}
DISCORECS_S3_REGION=${AWS_DEFAULT_REGION:-us-east-1}
DISCORECS_SPARK_MASTER=spark://$master:7077
DISCORECS_SPARK_DRIVER_MEMORY=$DRIVER_MEMORY
DISCORECS_SPARK_SHUFFLE_PARTITIONS=$SHUFFLE_PARTITIONS
DISCORECS_CACHE_DIR=/opt/discorecs
DISCORECS_HOME=/var/lib/discorecs/home
DISCORECS_MAVEN_REPOSITORY=$MAVEN_REPOSITORY
PYSPARK_PYTHON=/opt/discorecs/venv/bin/python
${NODE_SETTINGS}
SETTINGS
}

SPARK_UNITS=(discorecs-spark-master.service discorecs-spark-worker.service
  discorecs-producers.service discorecs-stream.service discorecs-web.service
  discorecs-nightly.service discorecs-nightly.timer)

step_spark() {
  local cluster dir master i role
  cluster="$(spark_cluster)"
  dir="$(build_dir spark)"
  mapfile -t spark_nodes < <(addresses "$cluster")
  master="${spark_nodes[0]}"
  settings_env >"$dir/discorecs.env"
  printf 'DISCORECS_SPARK_CORES_MAX=%s\nDISCORECS_SPARK_EXECUTOR_MEMORY=%s\n' \
    "$STREAM_CORES" "$STREAM_EXECUTOR_MEMORY" >"$dir/stream.env"
  printf 'DISCORECS_SPARK_EXECUTOR_MEMORY=%s\n' "$NIGHTLY_EXECUTOR_MEMORY" >"$dir/nightly.env"
  printf 'RATE=%s\nACTIVE_USERS=%s\nPARTITIONS=%s\nREPLICATION=%s\nDISCORECS=%s\n' \
    "$PRODUCER_RATE" "$ACTIVE_USERS" "$TOPIC_PARTITIONS" "$TOPIC_REPLICATION" \
    /opt/discorecs/venv/bin/discorecs >"$dir/producers.env"
  for ((i = 0; i < ${#spark_nodes[@]}; i++)); do
    role=worker && [[ $i -eq 0 ]] && role=master
    printf '%s\n' "SPARK_LOCAL_IP=${spark_nodes[i]}" "SPARK_MASTER_HOST=$master" \
      "SPARK_WORKER_CORES=$SPARK_WORKER_CORES" "SPARK_WORKER_MEMORY=$SPARK_WORKER_MEMORY" \
      SPARK_WORKER_DIR=/var/lib/discorecs/spark/work \
      SPARK_LOCAL_DIRS=/var/lib/discorecs/spark/local >"$dir/node-$((i + 1)).env"
    on_node "$cluster" "$((i + 1))" spark "$(
      node_files files /etc/discorecs/discorecs.env="$dir/discorecs.env" \
        /etc/discorecs/node.env="$dir/node-$((i + 1)).env" \
        /etc/discorecs/stream.env="$dir/stream.env" \
        /etc/discorecs/nightly.env="$dir/nightly.env" \
        /etc/discorecs/producers.env="$dir/producers.env"
      unit_files "${SPARK_UNITS[@]}"
      app_archive
    )" NODE_HOST="${spark_nodes[i]}" ROLE="$role" SPARK_MASTER_HOST="$master" \
      MAVEN_REPOSITORY="$MAVEN_REPOSITORY" PIP_OPTIONS="$PIP_OPTIONS" \
      S3A="$([[ "$DATA_ROOT" == s3a://* ]] && echo 1 || echo 0)"
  done
}


step_load() {
  local dump="$DUMP"
  dry_run && dump="${DUMP:-s3://EXAMPLE-BUCKET/discogs_20261101_releases.xml.gz}"
  [[ -n "$dump" ]] || die "set DUMP to the Discogs releases dump (s3://bucket/key or https://)"
  on_node "$(spark_cluster)" 1 load "" NODE_HOST="$(master_address)" DUMP="$dump" \
    USERS="$USERS" USERS_SEED="$USERS_SEED" TOPIC_PARTITIONS="$TOPIC_PARTITIONS" \
    TOPIC_REPLICATION="$TOPIC_REPLICATION"
}

step_app() {
  on_node "$(spark_cluster)" 1 app "" NODE_HOST="$(master_address)"
}

step_schedule() {
  local dir
  dir="$(build_dir spark)"
  printf '[Timer]\nOnCalendar=\nOnCalendar=*-*-* %s:00 UTC\n' "$NIGHTLY_AT" >"$dir/schedule.conf"
  on_node "$(spark_cluster)" 1 schedule "$(
    node_files files /etc/systemd/system/discorecs-nightly.timer.d/schedule.conf="$dir/schedule.conf"
  )" NODE_HOST="$(master_address)"
}

step_nightly() {
  on_node "$(spark_cluster)" 1 nightly "" NODE_HOST="$(master_address)"
}

step_down() {
  if ! dry_run && [[ -t 0 && "${YES:-0}" != 1 ]]; then
    read -r -p "terminate every instance of $CLUSTER_PREFIX-{kafka,spark,cassandra}? [y/N] " answer
    [[ "$answer" == y || "$answer" == Y ]] || die "nothing terminated"
  fi
  local cluster
  for cluster in "$(kafka_cluster)" "$(spark_cluster)" "$(cassandra_cluster)"; do
    # Pegasus asks y/n on its standard input.
    if dry_run; then
      printf "+ printf 'y\\\\n' | peg down %s\n" "$cluster"
    else
      printf 'y\n' | peg down "$cluster" || die "peg down $cluster failed (see above)"
    fi
  done
}
