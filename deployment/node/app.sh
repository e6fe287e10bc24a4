# shellcheck shell=bash
# On the Spark master: the producers, the streaming job and the site, as enabled units.
# shellcheck disable=SC2154

restart_units discorecs-producers.service discorecs-stream.service discorecs-web.service
wait_for_port "$NODE_HOST" 8000 180 discorecs-web.service
for unit in discorecs-producers.service discorecs-stream.service; do
  systemctl is-active --quiet "$unit" || {
    journalctl -u "$unit" -n 40 --no-pager >&2
    fail "$unit is not running (its journal is above)"
  }
done
say "producers, stream and site running"
