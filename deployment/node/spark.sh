# shellcheck shell=bash
# A Spark node: the project's virtualenv (PySpark is Spark: the version requirements.txt
# pins), the standalone master or a worker, and on the master the jars the drivers hand to
# executors. Settings: NODE_HOST, ROLE (master|worker), SPARK_MASTER_HOST, MAVEN_REPOSITORY,
# PIP_OPTIONS, S3A (1 when the data root is s3a://). Written before this runs:
# /etc/discorecs/*.env and every discorecs unit.
# shellcheck disable=SC2154

ensure_runtime
ensure_user
install_app
chown root:discorecs /etc/discorecs/*.env && chmod 640 /etc/discorecs/*.env

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
say "installing the project and its pinned dependencies into $VENV"
pip=("$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check)
# shellcheck disable=SC2086  # PIP_OPTIONS is a list of options
"${pip[@]}" $PIP_OPTIONS -r "$APP/requirements.txt"
# shellcheck disable=SC2086
"${pip[@]}" $PIP_OPTIONS --no-deps --force-reinstall "$APP"

# Spark's own scripts find Spark beside the python on PATH; the units name it instead.
spark_home=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
echo "SPARK_HOME=$spark_home" >>/etc/discorecs/node.env

mkdir -p /var/lib/discorecs/spark/work /var/lib/discorecs/spark/local
chown -R discorecs: /var/lib/discorecs/spark

if [[ "$ROLE" == master ]]; then
  for bundle in spark-kafka $([[ "$S3A" == 1 ]] && echo s3a); do
    "$VENV/bin/python" -m discorecs.services.maven install "$bundle" \
      --repository "$MAVEN_REPOSITORY" --cache /opt/discorecs >/dev/null
  done
  restart_units discorecs-spark-master.service
  wait_for_port "$NODE_HOST" 7077 180 discorecs-spark-master.service
else
  restart_units discorecs-spark-worker.service
  deadline=$((SECONDS + 180))
  until curl -fsS "http://$SPARK_MASTER_HOST:8080/json/" 2>/dev/null | grep -q "\"host\" : \"$NODE_HOST\""; do
    if [[ $SECONDS -ge $deadline ]]; then
      journalctl -u discorecs-spark-worker.service -n 40 --no-pager >&2 || true
      fail "the worker did not register with the master at $SPARK_MASTER_HOST within 180 s"
    fi
    sleep 3
  done
  say "worker registered with the master at $SPARK_MASTER_HOST"
fi
