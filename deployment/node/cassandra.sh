# shellcheck shell=bash
# A Cassandra node: Java, its jars, its data on the instance's NVMe drive when it has one,
# its unit; returns once the node answers CQL (it has joined the ring).
# Settings: NODE_HOST, MAVEN_REPOSITORY, TUNE_KERNEL. Written before this runs:
# /etc/discorecs/cassandra/*, /etc/systemd/system/discorecs-cassandra.service.
# shellcheck disable=SC2154

ensure_runtime
ensure_user
install_app
install_jars cassandra cassandra

data=/var/lib/discorecs/cassandra
mkdir -p "$data"
# An i3 instance's NVMe instance store is the node's data drive (EBS root volume otherwise):
# formatted and mounted once, listed in fstab so a reboot mounts it again.
if ! mountpoint -q "$data"; then
  for device in /dev/nvme*n1; do
    [[ -b "$device" ]] || continue
    [[ "$(lsblk -dno MODEL "$device" 2>/dev/null)" == *"Instance Storage"* ]] || continue
    [[ -z "$(lsblk -no MOUNTPOINT "$device" | tr -d '[:space:]')" ]] || continue
    say "formatting $device for Cassandra's data"
    mkfs.ext4 -q -F "$device"
    echo "$device $data ext4 defaults,noatime,nofail 0 2" >>/etc/fstab
    mount "$data"
    break
  done
fi
mkdir -p "$data"/{data,commitlog,saved_caches,hints,cdc_raw}
chown -R discorecs: "$data"
if [[ "${TUNE_KERNEL:-1}" == 1 ]]; then
  # Cassandra maps every sstable: the kernel's default map count is too low for a big node.
  sysctl -q -w vm.max_map_count=1048575
  echo 'vm.max_map_count = 1048575' >/etc/sysctl.d/60-discorecs-cassandra.conf
fi
restart_units discorecs-cassandra.service
wait_for_port "$NODE_HOST" 9042 900 discorecs-cassandra.service
