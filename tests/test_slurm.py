"""The workflow on a real SLURM cluster, through profiles/slurm.

The test brings up a one-node cluster from Debian's packages (slurmctld, slurmd, slurm-client,
munge; installed with apt-get when missing), with a fake GPU and no accounting database, so job
states come from squeue, as on the account-less clusters the README describes. A tiny CelebA grid
runs through sbatch: each job must ask SLURM for what the preset says (scontrol), its metrics must
equal a local run's byte for byte, a training job cancelled with scancel, and one sent the time
limit's warning signal, must be resubmitted and resume to the same metrics, and Ctrl-C must cancel
the jobs. It needs root (it writes /etc/slurm and starts daemons) and skips otherwise; it stops
every daemon it started. About 3.5 minutes on 2 idle cores, 10 s of it installing the packages.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from workflow_copy import TINY, call, copy_workflow, edit_params, env, fill_slurm_profile

from roaming import grid

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")
# srun inside a job finds the cluster only here: the SLURM plugin's job step drops SLURM_CONF.
CONF_DIR = Path("/etc/slurm")
MARKER = "# A test cluster of roaming's tests/test_slurm.py; removed when the test ends."
LOCK = Path(tempfile.gettempdir()) / "roaming-slurm-test.lock"
ACCOUNT, CPU_PARTITION, GPU_PARTITION = "roaming", "cpu", "gpu"
# TINY's CelebA grid with one TR run at the default sharing, 20 tiny epochs on 128 images
# (about 0.2 s each with their evaluation): after the first checkpoint, seconds are left to
# interrupt the training job before it finishes.
GRID = {
    "data": {"fixtures": {"seed": 0, "n_train": 128, "n_val": 32, "n_test": 64}},
    "train": {**TINY["train"], "epochs": 20},
    "grid": {**TINY["grid"], "tr": {}},
}
# How the demo preset's CelebA runs ask for resources, and how a paper-like preset does.
DEMO_RESOURCES = {"threads": 1, "gpu": 0, "mem_mb": 2000, "runtime": 30, "evaluate_runtime": 10}
GPU_RESOURCES = {"threads": 1, "gpu": 1, "mem_mb": 1500, "runtime": 20, "evaluate_runtime": 5}
SNAKEMAKE_SLURM = [
    "snakemake",
    "--profile",
    "profiles/slurm",
    "--slurm-status-command",
    "squeue",  # no accounting database
    "--slurm-keep-successful-logs",
]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: installs SLURM, writes /etc/slurm and starts its daemons"
    if not all(shutil.which(name) for name in COMMANDS) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install Debian's slurm-wlm"
    for name in ("slurm.conf", "gres.conf"):
        path = CONF_DIR / name
        if path.exists() and MARKER not in path.read_text(errors="replace"):
            return f"{path} belongs to a real SLURM installation; not replacing it"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]


def _install() -> None:
    if all(shutil.which(name) for name in COMMANDS):
        return
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(apt, env=apt_env, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=apt_env, capture_output=True, check=False)
        result = subprocess.run(apt, env=apt_env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"apt-get could not install {' '.join(PACKAGES)}:\n{result.stderr}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_conf(root: Path, host: str) -> str:
    """One node with 8 CPUs, 64 GB and a GPU (whatever this machine has), two partitions."""
    return f"""{MARKER}
ClusterName=roamingtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/run/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# No systemd, no cgroups in a container: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Take the node's CPUs and memory from here, not from the hardware.
SlurmdParameters=config_overrides
GresTypes=gpu
# Without accounting, squeue is the only source of job states: keep finished jobs an hour.
MinJobAge=3600
KillWait=10
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes=ALL MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One test cluster per machine: /etc/slurm is shared by every run of this test."""
    with LOCK.open("w") as lock:
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("another run of the SLURM test holds its cluster")
                time.sleep(2)
        yield


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def _node_idle() -> bool:
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return result.stdout.strip() == "idle"


def _no_jobs() -> bool:
    result = subprocess.run(["squeue", "-h"], capture_output=True, text=True)
    return result.returncode == 0 and not result.stdout.strip()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """A running one-node cluster; yields its state folder (logs under log/)."""
    _install()
    with _exclusive():
        root = Path(tempfile.mkdtemp(prefix="roaming-slurm-"))
        root.chmod(0o755)  # munged wants its socket's folders readable by all
        for name in ("run", "state", "spool", "log"):
            (root / name).mkdir(mode=0o755)
        key = root / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        host = socket.gethostname().split(".")[0]  # `hostname -s`: slurmd's node name
        written: list[Path] = []
        daemons: list[subprocess.Popen[bytes]] = []
        try:
            CONF_DIR.mkdir(parents=True, exist_ok=True)
            for name, text in (
                ("slurm.conf", _slurm_conf(root, host)),
                ("gres.conf", f"{MARKER}\nNodeName={host} Name=gpu File=/dev/null\n"),
            ):
                (CONF_DIR / name).write_text(text)
                written.append(CONF_DIR / name)
            commands = [
                [
                    "munged",
                    "-F",
                    f"--socket={root}/run/munge.sock",
                    f"--key-file={key}",
                    f"--pid-file={root}/run/munged.pid",
                    f"--log-file={root}/log/munged.log",
                    f"--seed-file={root}/munge.seed",
                ],
                ["slurmctld", "-D", "-i"],
                ["slurmd", "-D"],
            ]
            for command in commands:
                with (root / "log" / f"{command[0]}.out").open("wb") as out:
                    daemons.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
                time.sleep(1)
                if daemons[-1].poll() is not None:
                    log = (root / "log" / f"{command[0]}.out").read_text()
                    pytest.fail(f"{command[0]} did not start:\n{log}")
            _wait(_node_idle, "the node to come up")
            yield root
        finally:
            if daemons and len(daemons) == len(commands):
                subprocess.run(["scancel", "--user=root"], capture_output=True)
                with contextlib.suppress(Exception):
                    _wait(_no_jobs, "the jobs to end", timeout=60)
            for daemon in reversed(daemons):
                daemon.terminate()
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
            for path in written:
                path.unlink(missing_ok=True)
            shutil.rmtree(root, ignore_errors=True)


class Ran(NamedTuple):
    """A run of the grid: its repository, wall time (s) and the SLURM jobs it submitted."""

    repo: Path
    seconds: float
    jobs: list[dict[str, str]]


def _workflow(dest: Path) -> Path:
    repo = copy_workflow(dest)
    edit_params(repo, {**GRID, "resources": DEMO_RESOURCES}, only_celeba=True)
    return repo


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """The grid run locally."""
    repo = _workflow(tmp_path_factory.mktemp("local"))
    start = time.monotonic()
    call(["snakemake", "--cores", "all"], repo)
    return Ran(repo, time.monotonic() - start, [])


def _jobs() -> dict[str, dict[str, str]]:
    """Every job the cluster knows (finished ones for MinJobAge), by id: scontrol's fields."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def _new_jobs(before: set[str]) -> list[dict[str, str]]:
    """The jobs submitted since ``before`` (a set of job ids), oldest first."""
    jobs = _jobs()
    return [jobs[id_] for id_ in sorted(jobs, key=int) if id_ not in before]


def _batch_script(job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "write", "batch_script", job_id, "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _asked(job: dict[str, str]) -> dict[str, str]:
    """What a job asked SLURM for."""
    return {
        "partition": job["Partition"],
        "account": job["Account"],
        "cpus": job["NumCPUs"],
        "mem": job["MinMemoryNode"],
        "time": job["TimeLimit"],
        "gpus": job.get("TresPerJob", ""),
    }


def _same_metrics(repo: Path, reference: Path) -> None:
    plan = grid.plan(grid.load(repo / "params.yaml"))
    for run in plan.runs:
        path = run.metrics["test"]
        assert (repo / path).read_bytes() == (reference / path).read_bytes(), path


@pytest.fixture(scope="module")
def slurm(cluster: Path, local: Ran, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """The grid run through sbatch."""
    repo = _workflow(tmp_path_factory.mktemp("slurm"))
    fill_slurm_profile(repo, account=ACCOUNT, cpu=CPU_PARTITION, gpu=GPU_PARTITION)
    before = set(_jobs())
    start = time.monotonic()
    call(SNAKEMAKE_SLURM, repo)
    return Ran(repo, time.monotonic() - start, _new_jobs(before))


def test_demo_through_sbatch_asks_for_what_the_preset_says_and_matches_a_local_run(
    slurm: Ran, local: Ran
) -> None:
    _same_metrics(slurm.repo, local.repo)
    jobs = slurm.jobs
    by_comment = {job["Comment"]: job for job in jobs}
    # fixtures and report run on the submit host; each run's training and evaluation is one job
    assert len(jobs) == 1 + len(grid.plan(grid.load(slurm.repo / "params.yaml")).runs)
    prepare = by_comment["rule_prepare_wildcards_celeba"]
    assert _asked(prepare) == {
        "partition": CPU_PARTITION,
        "account": ACCOUNT,
        "cpus": "4",  # the rule's threads, not capped at this host's cores
        "mem": "8000M",
        "time": "02:00:00",
        "gpus": "",
    }
    runs = [job for job in jobs if job["Comment"].startswith("rule_run")]
    assert {job["JobState"] for job in jobs} == {"COMPLETED"}
    for job in runs:
        assert _asked(job) == {
            "partition": CPU_PARTITION,
            "account": ACCOUNT,
            "cpus": str(DEMO_RESOURCES["threads"]),
            "mem": f"{DEMO_RESOURCES['mem_mb']}M",
            "time": "00:40:00",  # training 30 + evaluation 10 minutes
            "gpus": "",  # the demo asks for no GPU
        }
        assert "--latency-wait 60" in _batch_script(job["JobId"])  # the SLURM profile's
    print(
        f"\ntiny CelebA grid (synthetic, 2 runs): local {local.seconds:.0f} s, "
        f"SLURM {slurm.seconds:.0f} s, ratio {slurm.seconds / local.seconds:.2f}"
    )


def _wait_for_checkpoint(run_dir: Path, snakemake: subprocess.Popen[str]) -> str:
    """The SLURM job that trains ``run_dir``, once that has written its first checkpoint."""
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint.pt").exists():
        if snakemake.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no checkpoint in {run_dir}; snakemake: {snakemake.poll()}")
        time.sleep(0.1)
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True
    ).stdout
    running = [line.split()[0] for line in out.splitlines() if "rule_run" in line]
    assert len(running) == 1, out
    return running[0]


# How the log of a resumed training starts (from the last epoch's checkpoint, or mid-epoch from
# the one `roaming train` writes when SIGTERM or SIGUSR1 stops it at a batch boundary).
RESUMED = re.compile(r"resuming (after epoch \d+|in epoch \d+ after batch \d+ of \d+)")


def _interrupt_training(repo: Path, run_id: str, interrupt: list[str]) -> list[dict[str, str]]:
    """Retrain ``run_id`` through sbatch, running ``interrupt`` + [job id] on its job once it
    has written its first checkpoint; the jobs submitted, once Snakemake has finished."""
    run = grid.plan(grid.load(repo / "params.yaml")).run(run_id)
    shutil.rmtree(repo / run.dir)
    before = set(_jobs())
    log = repo / "snakemake.log"
    with log.open("w") as out:
        snakemake = subprocess.Popen(
            SNAKEMAKE_SLURM, cwd=repo, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True
        )
        try:
            job = _wait_for_checkpoint(repo / run.dir, snakemake)
            subprocess.run([*interrupt, job], check=True)
            assert snakemake.wait(timeout=300) == 0, log.read_text()
        finally:
            if snakemake.poll() is None:
                snakemake.kill()
    plan = grid.plan(grid.load(repo / "params.yaml"))
    assert RESUMED.search((repo / plan.logs_dir / "train" / f"{run.id}.log").read_text())
    return _new_jobs(before)


def test_cancelled_gpu_training_job_is_resubmitted_and_resumes(slurm: Ran, local: Ran) -> None:
    # Retrain a run as a paper-like preset asks: with a GPU (and the local run's threads, part
    # of its configuration).
    edit_params(slurm.repo, {"resources": GPU_RESOURCES})
    jobs = _interrupt_training(slurm.repo, "celeba/mtl/s0", ["scancel"])
    assert [job["JobState"] for job in jobs] == ["CANCELLED", "COMPLETED"]  # resubmitted
    asked = {
        "partition": GPU_PARTITION,
        "account": ACCOUNT,
        "cpus": str(GPU_RESOURCES["threads"]),
        "mem": f"{GPU_RESOURCES['mem_mb']}M",
        "time": "00:25:00",
        "gpus": "gres:gpu:1",  # training asks for a GPU: --gpus=1
    }
    assert [_asked(job) for job in jobs] == [asked, asked]
    _same_metrics(slurm.repo, local.repo)


def test_time_limit_warning_reaches_training_which_resumes(slurm: Ran, local: Ran) -> None:
    # SIGUSR1 to every process of the job's steps: what `--signal=USR1@300` (the profile's)
    # sends five minutes before the time limit. Snakemake inside the job lets it pass.
    jobs = _interrupt_training(
        slurm.repo, "celeba/mr/p0.5_d0.1_random_r1_s0", ["scancel", "--signal=USR1"]
    )
    assert [job["JobState"] for job in jobs] == ["FAILED", "COMPLETED"]  # resubmitted
    _same_metrics(slurm.repo, local.repo)


def test_ctrl_c_once_cancels_the_jobs_and_leaves_no_lock(slurm: Ran) -> None:
    repo = slurm.repo
    run = grid.plan(grid.load(repo / "params.yaml")).run("celeba/mtl/s0")
    shutil.rmtree(repo / run.dir)
    before = set(_jobs())
    snakemake = subprocess.Popen(
        SNAKEMAKE_SLURM, cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait(lambda: any(job["JobState"] == "RUNNING" for job in _new_jobs(before)), "a job")
        snakemake.send_signal(signal.SIGINT)
        output, _ = snakemake.communicate(timeout=60)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
    assert snakemake.returncode != 0
    assert b"Terminating processes on user request" in output
    _wait(lambda: all(job["JobState"] == "CANCELLED" for job in _new_jobs(before)), "scancel")
    assert not list(repo.glob(".snakemake/locks/*"))  # no --unlock needed
