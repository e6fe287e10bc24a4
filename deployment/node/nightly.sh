# shellcheck shell=bash
# On the Spark master: run the nightly batch now, exactly as the timer does, and wait for it.
if ! systemctl start discorecs-nightly.service; then
  journalctl -u discorecs-nightly.service -n 60 --no-pager >&2
  fail "the nightly batch failed (its journal is above)"
fi
journalctl -u discorecs-nightly.service -n 30 --no-pager
say "nightly batch done"
