# shellcheck shell=bash
# On the Spark master: the nightly batch's timer (its hour in the drop-in written before).
systemctl daemon-reload
systemctl enable --now discorecs-nightly.timer
say "nightly batch scheduled"
