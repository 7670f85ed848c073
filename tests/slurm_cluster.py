"""A Slurm cluster of two nodes on this machine for the tests: munged, slurmctld and one slurmd per node from
Debian's packages, each with its own files in a fresh folder and free ports, so nothing of the machine's own Slurm
(if any) is used. The first node is named as this machine, so that a job's first node resolves as a rendezvous
host, as on a real cluster. Each node offers one GPU as a generic resource backed by /dev/null or /dev/zero: a job
asks for GPUs exactly as on a real cluster and gets CUDA_VISIBLE_DEVICES; the workers then find no CUDA and train
on the CPU."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


def missing() -> str:
    """Why no cluster can start here ("" if one can), installing Debian's packages first as root."""
    if os.geteuid() != 0:
        return "a private Slurm cluster needs root (slurmd starts jobs as their user)"
    if any(shutil.which(name) is None for name in DAEMONS):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                return f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return ""


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports: their sockets are held together while the ports are chosen (one at a time, two
    calls could give the same port, and slurmctld and a slurmd then fought over it)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SlurmCluster:
    def __init__(self) -> None:
        # Short and fixed-depth: munge's socket path must fit in a sockaddr_un (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="swehero-slurm-"))
        self.nodes = [socket.gethostname(), f"{socket.gethostname()}-2"]
        munge = self.dir / "munge"
        munge.mkdir(mode=0o700)
        (munge / "key").write_bytes(os.urandom(128))
        (munge / "key").chmod(0o600)
        self.conf = self.dir / "slurm.conf"
        controller_port, *node_ports = _free_ports(1 + len(self.nodes))
        self.conf.write_text("\n".join([
            "ClusterName=swehero-test", f"SlurmctldHost={self.nodes[0]}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge / 'socket'}",
            "SlurmUser=root", "SlurmdUser=root", f"SlurmctldPort={controller_port}",
            f"StateSaveLocation={self.dir / 'state'}", f"SlurmdSpoolDir={self.dir / 'spool-%n'}",
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}", f"SlurmdPidFile={self.dir / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={self.dir / 'slurmctld.log'}", f"SlurmdLogFile={self.dir / 'slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "MpiDefault=none", "ReturnToService=2",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "GresTypes=gpu",
            *(f"NodeName={node} NodeHostname={node} NodeAddr=127.0.0.1 Port={port} CPUs={os.cpu_count()} "
              "RealMemory=4000 Gres=gpu:1 State=UNKNOWN" for node, port in zip(self.nodes, node_ports)),
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        (self.dir / "gres.conf").write_text("".join(
            f"NodeName={node} Name=gpu File={device}\n" for node, device in zip(self.nodes, ("/dev/null", "/dev/zero"))))
        # Jobs inherit the submitter's environment (sbatch --export=ALL): this Python's `swehero` and `torchrun`.
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        try:  # a cluster that does not come up is shut down, not left running for the next tests to meet
            subprocess.run(["munged", "--force", f"--socket={munge / 'socket'}", f"--key-file={munge / 'key'}",
                            f"--log-file={munge / 'log'}", f"--pid-file={munge / 'pid'}",
                            f"--seed-file={munge / 'seed'}"], check=True)
            subprocess.run(["slurmctld", "-f", str(self.conf)], env=self.env, check=True)
            for node in self.nodes:
                subprocess.run(["slurmd", "-f", str(self.conf), "-N", node], env=self.env, check=True)
            deadline = time.monotonic() + 60
            while self.run("sinfo", "--noheader", "--Node", "--format=%t").stdout.split() != ["idle", "idle"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the test cluster's nodes never became idle; see {self.dir}/slurm*.log")
                time.sleep(0.5)
        except BaseException:
            self._stop()  # its logs stay, for the error to point at
            raise

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)

    def wait(self, job: str, timeout_s: float) -> None:
        """Until Slurm no longer queues or runs `job` (an ended job's state may still be listed for a while)."""
        deadline = time.monotonic() + timeout_s
        # An array job lists a state for each of its tasks still queued or running.
        while states := {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}.intersection(
                self.run("squeue", "--noheader", "--jobs", job, "--format=%T").stdout.split()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slurm job {job} still {', '.join(sorted(states))} after {timeout_s} s")
            time.sleep(1)

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stop(self) -> None:
        self.run("scontrol", "shutdown")  # slurmctld and every slurmd
        pid = self.dir / "munge" / "pid"
        if pid.exists():
            os.kill(int(pid.read_text()), 15)
