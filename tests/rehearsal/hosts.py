"""Test hosts for the deployment rehearsal: network namespaces on one bridge, each with its own
address and its own /etc, /opt, /tmp, /var/lib/discorecs and /var/log/discorecs (bind mounts
in a mount namespace of its own), so what a node script installs or starts on one host is
neither seen nor reachable on another except through the network.

Each host is held by a process (`sleep`) inside its namespaces; the Pegasus stand-in
(tests/rehearsal/peg) runs a node's commands with ``nsenter`` into that process's network and
mount namespaces. Everything made here is removed by :meth:`RehearsalHosts.close`: the processes in
the namespaces (found by namespace, so only what ran on the test hosts), the namespaces, the
links and the mount points it had to create. Needs root, ``ip``, ``unshare`` and ``nsenter``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Folders each host has of its own; a mount point missing on this machine is created (and
# removed again at the end). /tmp last: the other folders' sources may be under it.
PRIVATE = ("/etc", "/opt", "/var/lib/discorecs", "/var/log/discorecs", "/tmp")
TOOLS = ("ip", "unshare", "nsenter")
# The systemctl and sudo stand-ins, mounted into every host at one fixed place: the
# checkout they come from may lie under /tmp, which each host replaces with its own.
STANDIN_SOURCE = Path(__file__).with_name("bin")
STANDIN_BIN = "/run/discorecs-rehearsal/bin"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    cluster: str
    role: str
    address: str
    netns: str
    holder: subprocess.Popen

    def pids(self) -> list[int]:
        """Every process in this host's network namespace."""
        listed = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        ).stdout.split()
        return [int(pid) for pid in listed]

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A shell command on the host, as root, with the systemctl stand-in on PATH (for the
        test's own checks)."""
        path = f"{STANDIN_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-n", "-m", "--",
             "env", f"PATH={path}", "bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip


class RehearsalHosts:
    """Hosts on 10.213.<net>.0/24 behind a bridge whose own address, <prefix>.1, is where the
    test serves what the hosts may reach of this machine (artifacts, an S3 server)."""

    def __init__(self, root: Path, tag: str, net: int = 0) -> None:
        self.root = root
        self.tag = tag
        self.prefix = f"10.213.{net}"
        self.gateway = f"{self.prefix}.1"
        self.bridge = f"drb{tag}"
        self.hosts: list[Host] = []
        self.namespaces: list[str] = []
        self.created_mount_points: list[Path] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add(self, cluster: str, role: str) -> Host:
        index = len(self.hosts) + 1
        address = f"{self.prefix}.{10 + index}"
        netns = f"dr{self.tag}-{index}"
        outside, inside = f"dr{self.tag}{index}a", f"dr{self.tag}{index}b"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", netns)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", netns, "link", "set", inside, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        own = self.root / f"host-{index}"
        binds = []
        for folder in PRIVATE:
            mine = own / folder.strip("/").replace("/", "-")
            if folder == "/etc":
                shutil.copytree("/etc", mine, symlinks=True)
            else:
                mine.mkdir(parents=True)
            if folder == "/tmp":
                mine.chmod(0o1777)
            point = Path(folder)
            if not point.exists():
                point.mkdir(parents=True)
                self.created_mount_points.append(point)
            binds.append(f"mount --bind {mine} {folder}")
        # Before /tmp is replaced (the last of PRIVATE): the checkout may lie under it.
        binds.insert(-1, f"mount --bind {STANDIN_SOURCE} {STANDIN_BIN}")
        if not Path(STANDIN_BIN).exists():
            Path(STANDIN_BIN).mkdir(parents=True)
            self.created_mount_points += [Path(STANDIN_BIN).parent, Path(STANDIN_BIN)]
        holder = subprocess.Popen(
            [
                "ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
                "--", "sh", "-c", " && ".join([*binds, "exec sleep infinity"]),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while Path(f"/proc/{holder.pid}/cmdline").read_bytes() != b"sleep\0infinity\0":
            if holder.poll() is not None or time.monotonic() > deadline:
                holder.kill()
                raise RuntimeError(f"test host {netns} did not start (mounts failed?)")
            time.sleep(0.05)
        host = Host(cluster, role, address, netns, holder)
        self.hosts.append(host)
        return host

    def hosts_file(self) -> str:
        """The Pegasus stand-in's list: cluster, role, address, holder pid."""
        return "".join(f"{h.cluster} {h.role} {h.address} {h.holder.pid}\n" for h in self.hosts)

    def close(self) -> None:
        for host in self.hosts:
            for _ in range(3):
                pids = [pid for pid in host.pids() if pid != host.holder.pid]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
            host.holder.send_signal(signal.SIGKILL)
            host.holder.wait(10)
        for netns in self.namespaces:
            subprocess.run(["ip", "netns", "del", netns], check=False)
        subprocess.run(["ip", "link", "del", self.bridge], check=False)
        for point in reversed(self.created_mount_points):
            with contextlib.suppress(OSError):
                point.rmdir()
        shutil.rmtree(self.root, ignore_errors=True)
