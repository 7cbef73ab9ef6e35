"""Start and stop a real Kubernetes control plane on loopback, for tests and by hand.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as
plain local processes launched by ``kwokctl create cluster --runtime=binary``,
pointed at the binaries :mod:`harness.build` compiled from their Go modules.
kwokctl is told ``--kube-admission`` and ``--kube-authorization`` because
without them it switches every admission plugin off (admission webhooks would
silently never be called) and runs without RBAC, which is not a real cluster;
``--disable-qps-limits`` lifts client QPS in kcm/scheduler and the apiserver's
inflight limits so a 3,000-pod burst measures spreadhook, not throttling.

Everything a cluster owns lives under one directory (default ``.controlplane/``
in the repository root): kwokctl's workdir, the cluster's PKI, logs and pid
files, and ``kubeconfig``. ``down`` stops every process and removes it.

CLI::

    scripts/controlplane up [--dir DIR] [--spreadhook]
                                            # build what is missing, start, print exports; with
                                            # --spreadhook also install and run spreadhook (harness.install)
    scripts/controlplane down [--dir DIR]   # stop everything, leave no process behind
    scripts/controlplane status [--dir DIR]
    scripts/controlplane env [--dir DIR]    # print the export lines again
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import build, nodes

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Log = Callable[[str], None]

CLUSTER_NAME = "spreadhook"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 180.0


class ControlPlaneError(RuntimeError):
    """The control plane did not start or answer; the message points at its logs."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message includes kubectl's own stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {str(self.stderr).strip()[-2000:]}"


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def repo_root() -> Path:
    """The repository root (harness/ lives directly under it)."""
    return Path(__file__).resolve().parent.parent


def default_dir() -> Path:
    """Where `scripts/controlplane` keeps its cluster unless --dir says otherwise (git-ignored)."""
    return repo_root() / ".controlplane"


@dataclass
class ControlPlane:
    """A running (or to-be-started) control plane rooted at DIRECTORY.

    Later code (``install_spreadhook``) registers webhooks with a ``url``
    clientConfig on ``webhook_host``: the apiserver is a local process, so a
    webhook listening on 127.0.0.1 is reachable from it directly.
    """

    directory: Path
    bin_dir: Path = field(default_factory=build.bin_dir)
    name: str = CLUSTER_NAME
    webhook_host: str = LOOPBACK
    flow_control: bool = False
    """kube-apiserver with API Priority and Fairness and its inflight limits on, as every real cluster runs
    it, and kcm and the scheduler with their client QPS limits. Off by default: a burst should measure
    spreadhook, not throttling. On only to test what spreadhook declares to APF (deploy/flowcontrol.yaml)."""

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def kwok_workdir(self) -> Path:
        return self.directory / "kwok"

    @property
    def cluster_dir(self) -> Path:
        return self.kwok_workdir / "clusters" / self.name

    @property
    def logs_dir(self) -> Path:
        return self.cluster_dir / "logs"

    @property
    def ca_file(self) -> Path:
        """The cluster CA (signs the apiserver's serving cert and the admin client cert)."""
        return self.cluster_dir / "pki" / "ca.crt"

    @property
    def server(self) -> str:
        """The apiserver URL, read from the kubeconfig (https://127.0.0.1:<port>)."""
        match = re.search(r"^\s*server:\s*(\S+)", self.kubeconfig.read_text(), re.MULTILINE)
        if match is None:
            raise ControlPlaneError(f"no server in {self.kubeconfig}")
        return match.group(1).strip("'\"")

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG and the built binaries first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; text in/out, raises on failure if CHECK."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env(), check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def api_client(self, pool_maxsize: int = 32) -> ApiClient:
        """A fresh kubernetes.client.ApiClient for this cluster (not the process-global default)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_maxsize
        return client.ApiClient(configuration)

    def pids(self) -> dict[str, int]:
        """Component name -> pid, from kwokctl's pid files."""
        found: dict[str, int] = {}
        for pid_file in sorted((self.cluster_dir / "pids").glob("*.pid")):
            with contextlib.suppress(ValueError, OSError):
                found[pid_file.stem] = int(pid_file.read_text().strip())
        return found

    def is_running(self) -> bool:
        """True when the apiserver process is alive and answers /readyz."""
        pid = self.pids().get("kube-apiserver")
        if pid is None or not _alive(pid) or not self.kubeconfig.exists():
            return False
        return self.kubectl("get", "--raw=/readyz", check=False, timeout=10).returncode == 0

    def wait_for_service_account(self, namespace: str, timeout: float = 60.0) -> None:
        """Block until kcm created NAMESPACE's `default` ServiceAccount (pods are rejected before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kubectl("-n", namespace, "get", "serviceaccount", "default", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"no default ServiceAccount in {namespace} after {timeout:.0f}s")

    def export_lines(self) -> list[str]:
        """Shell lines a user pastes to talk to this cluster with the built kubectl."""
        return [f"export KUBECONFIG={self.kubeconfig}", f'export PATH="{self.bin_dir}:$PATH"']


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    return False


def _kwok_env(cp: ControlPlane) -> dict[str, str]:
    """kwokctl keeps all its state under the cluster's directory, never in ~/.kwok."""
    env = dict(os.environ)
    env["KWOK_WORKDIR"] = str(cp.kwok_workdir)
    env["KWOK_KUBECTL_BINARY"] = str(cp.bin_dir / "kubectl")
    env["KWOK_RUNTIME"] = "binary"
    return env


def kwokctl_config() -> dict[str, Any]:
    """kwokctl defaults (loaded from $KWOK_WORKDIR/kwok.yaml): bind every component to loopback."""
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {"bindAddress": LOOPBACK},
    }


def kwokctl_create_args(cp: ControlPlane) -> list[str]:
    """`kwokctl create cluster` flags: local binaries, real admission + RBAC, no throttling (unless
    ``cp.flow_control``)."""
    b = cp.bin_dir
    args = [
        str(b / "kwokctl"),
        f"--name={cp.name}",
        "create",
        "cluster",
        "--runtime=binary",
        f"--kube-apiserver-binary={b / 'kube-apiserver'}",
        f"--kube-controller-manager-binary={b / 'kube-controller-manager'}",
        f"--kube-scheduler-binary={b / 'kube-scheduler'}",
        f"--kwok-controller-binary={b / 'kwok'}",
        f"--etcd-binary={b / 'etcd'}",
        "--kube-admission",
        "--kube-authorization",
        "--disable-qps-limits",
        "--extra-args=etcd=unsafe-no-fsync=true",
        "--kubeconfig=",
        "--quiet-pull",
        "--wait=0s",
        "--timeout=3m",
    ]
    return [a for a in args if a != "--disable-qps-limits"] if cp.flow_control else args


def _run_kwokctl(cp: ControlPlane, args: Sequence[str], timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=_kwok_env(cp), capture_output=True, text=True, timeout=timeout, check=False)


def _tail_logs(cp: ControlPlane, lines: int = 15) -> str:
    """The last lines of every component log, for error messages that explain themselves."""
    chunks = []
    for log_file in sorted(cp.logs_dir.glob("*.log")):
        with contextlib.suppress(OSError):
            tail = log_file.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {log_file}\n" + "\n".join(tail))
    return "\n".join(chunks)


def _create_cluster(cp: ControlPlane, log: Log) -> None:
    """Run kwokctl and copy its host kubeconfig to DIR/kubeconfig."""
    cp.kwok_workdir.mkdir(parents=True, exist_ok=True)
    (cp.kwok_workdir / "kwok.yaml").write_text(json.dumps(kwokctl_config()))  # JSON is YAML
    log(f"[controlplane] starting etcd, apiserver, controller-manager, scheduler, kwok in {cp.directory}")
    proc = _run_kwokctl(cp, kwokctl_create_args(cp))
    if proc.returncode != 0:
        raise ControlPlaneError(f"kwokctl create cluster failed:\n{proc.stdout}\n{proc.stderr}\n{_tail_logs(cp)}")
    shutil.copyfile(cp.cluster_dir / "kubeconfig.yaml", cp.kubeconfig)


def _wait(what: str, predicate: Callable[[], bool], cp: ControlPlane, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}\n{_tail_logs(cp)}")


def register_nodes(cp: ControlPlane) -> None:
    """Create the contract's kwok nodes (docs/test-cluster-nodes.md) and wait until all are Ready."""
    cp.kubectl("apply", "-f", "-", input=json.dumps(nodes.node_manifests()))
    names = {n.name for n in nodes.NODES}
    _wait("kwok nodes Ready", lambda: names <= _ready_nodes(cp), cp)


def _ready_nodes(cp: ControlPlane) -> set[str]:
    proc = cp.kubectl("get", "nodes", "-o", "json", check=False, timeout=10)
    if proc.returncode != 0:
        return set()
    ready = set()
    for item in json.loads(proc.stdout)["items"]:
        conditions = item.get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            ready.add(item["metadata"]["name"])
    return ready


def _wait_until_usable(cp: ControlPlane) -> None:
    """Ready means: /readyz ok, the default namespace can hold pods (its SA exists)."""
    _wait("kube-apiserver /readyz", lambda: cp.kubectl("get", "--raw=/readyz", check=False).returncode == 0, cp)
    cp.wait_for_service_account("default", timeout=READY_TIMEOUT)


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """One up/down at a time per directory (the fixture's watchdog and teardown may race).

    The directory must exist: a `down` racing with the removal of a temporary
    directory must not recreate it.
    """
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(directory: Path | None = None, log: Log = _stderr_log, *, flow_control: bool = False) -> ControlPlane:
    """Build what is missing, start the control plane (or reuse the running one), register nodes."""
    bin_dir = build.ensure_binaries(log)
    cp = ControlPlane((directory or default_dir()).resolve(), bin_dir, flow_control=flow_control)
    cp.directory.mkdir(parents=True, exist_ok=True)
    with _dir_lock(cp.directory):
        if cp.is_running():
            log(f"[controlplane] already running at {cp.server}")
            return cp
        _down_locked(cp, log)
        start = time.monotonic()
        try:
            _create_cluster(cp, log)
            _wait_until_usable(cp)
            register_nodes(cp)
        except BaseException:
            _down_locked(cp, log)
            raise
        log(f"[controlplane] up at {cp.server} in {time.monotonic() - start:.1f}s")
    return cp


def spreadhook_dir(cp: ControlPlane) -> Path:
    """Where ``up --spreadhook`` keeps spreadhook's certificates, logs and pid files."""
    return cp.directory / "spreadhook"


def _spreadhook_alive(cp: ControlPlane) -> list[int]:
    """Pids of spreadhook processes started for this directory that are still running (pid files in
    DIR/spreadhook/*.pid, trusted only when the process's command line names this directory: pids get reused)."""
    found = []
    for pid_file in sorted(spreadhook_dir(cp).glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if _alive(pid) and "spreadhook" in cmdline and str(spreadhook_dir(cp)) in cmdline:
                found.append(pid)
    return found


def up_spreadhook(cp: ControlPlane, log: Log = _stderr_log) -> int:
    """Install spreadhook into the running control plane (``up --spreadhook``); returns the webhook's port.

    Reuses a spreadhook already running for this directory, so ``up --spreadhook`` twice is harmless."""
    from harness.install import install_spreadhook  # harness.install imports this module

    workdir = spreadhook_dir(cp)
    port_file = workdir / "port"
    if _spreadhook_alive(cp) and port_file.exists():
        log(f"[controlplane] spreadhook already running on port {port_file.read_text().strip()}")
        return int(port_file.read_text().strip())
    _stop_spreadhook(cp, log)
    webhook = install_spreadhook(cp, workdir)
    port_file.write_text(str(webhook.port))
    log(f"[controlplane] spreadhook (webhook + reconciler) at {webhook.url}, log {webhook.log}")
    return webhook.port


def _stop_spreadhook(cp: ControlPlane, log: Log) -> None:
    """SIGTERM, then SIGKILL, each spreadhook process group ``up --spreadhook`` started (gunicorn's
    workers share their master's group), then forget their pid files."""
    _terminate(_spreadhook_alive(cp), os.killpg, grace=15.0, log=log)
    for pid_file in spreadhook_dir(cp).glob("*.pid"):
        pid_file.unlink(missing_ok=True)
    (spreadhook_dir(cp) / "port").unlink(missing_ok=True)


def down(directory: Path | None = None, log: Log = _stderr_log) -> None:
    """Stop every process of the control plane in DIRECTORY (spreadhook's too) and remove its state."""
    cp = ControlPlane((directory or default_dir()).resolve())
    if cp.directory.exists():
        _stop_spreadhook(cp, log)
    try:
        with _dir_lock(cp.directory):
            _down_locked(cp, log)
    except FileNotFoundError:  # nothing was ever started there, or it is already gone
        return


def _down_locked(cp: ControlPlane, log: Log) -> None:
    pids = cp.pids()
    if cp.cluster_dir.exists() and (cp.bin_dir / "kwokctl").exists():
        proc = _run_kwokctl(cp, [str(cp.bin_dir / "kwokctl"), f"--name={cp.name}", "delete", "cluster"], timeout=120)
        if proc.returncode != 0:
            log(f"[controlplane] kwokctl delete failed, killing processes: {proc.stderr.strip()[-500:]}")
    _kill_leftovers(pids, cp, log)
    if pids:
        log(f"[controlplane] stopped {', '.join(sorted(pids))}")
    shutil.rmtree(cp.kwok_workdir, ignore_errors=True)
    cp.kubeconfig.unlink(missing_ok=True)


def _owned_by(pid: int, cp: ControlPlane) -> bool:
    """Only kill a pid whose command line names this cluster (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(cp.cluster_dir) in cmdline or str(cp.kwok_workdir) in cmdline


def _kill_leftovers(pids: dict[str, int], cp: ControlPlane, log: Log) -> None:
    """SIGTERM, then SIGKILL after 10 s, any component kwokctl failed to stop."""
    _terminate([pid for pid in pids.values() if _alive(pid) and _owned_by(pid, cp)], os.kill, grace=10.0, log=log)


def _terminate(pids: list[int], send: Callable[[int, int], None], *, grace: float, log: Log) -> None:
    """SIGTERM, wait up to GRACE seconds, then SIGKILL what is left; SEND is os.kill or os.killpg."""
    alive = pids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _alive(pid)]
            time.sleep(0.1)
        if not alive:
            return
        log(f"[controlplane] still alive after {sig.name}: {alive}")


# --------------------------------------------------------------------------- watchdog


def start_watchdog(directory: Path, owner_pid: int, remove_dir: bool = True) -> subprocess.Popen[bytes]:
    """Spawn a detached process that runs `down` (and removes DIRECTORY) once OWNER_PID is gone.

    atexit and signal handlers cover normal exits, Ctrl-C and SIGTERM; the
    watchdog also covers SIGKILL of the test runner, so no run leaves etcd or
    an apiserver behind.
    """
    log_file = (directory / "watchdog.log").open("ab")
    args = [sys.executable, "-m", "harness.controlplane", "watchdog", f"--dir={directory}", f"--owner={owner_pid}"]
    return subprocess.Popen(
        [*args, "--remove-dir"] if remove_dir else args,
        cwd=repo_root(),
        env={**os.environ, "PYTHONPATH": str(repo_root())},
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
    )


def watchdog(directory: Path, owner_pid: int, remove_dir: bool = False, poll: float = 1.0) -> None:
    """Wait for OWNER_PID to die, then tear down DIRECTORY's cluster (if still there)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cp = ControlPlane(directory.resolve())
    while _alive(owner_pid):
        if not cp.directory.exists():
            return
        time.sleep(poll)
    if cp.directory.exists():
        down(cp.directory)
    if remove_dir:
        shutil.rmtree(cp.directory, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/controlplane", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "build what is missing and start the control plane"),
        ("down", "stop every process of the control plane"),
        ("status", "say whether it runs, and where"),
        ("env", "print the export lines for a running control plane"),
        ("build", "only build (or reuse) the binaries"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--dir", type=Path, default=None, help="state directory (default: .controlplane/)")
        if name == "up":
            cmd.add_argument("--spreadhook", action="store_true",
                             help="also install spreadhook's CRD and RBAC, run its webhook and reconciler as a "
                                  "local process and register its webhooks")
    dog = sub.add_parser("watchdog", help=argparse.SUPPRESS)
    dog.add_argument("--dir", type=Path, required=True)
    dog.add_argument("--owner", type=int, required=True)
    dog.add_argument("--remove-dir", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of scripts/controlplane."""
    args = _parser().parse_args(argv)
    directory: Path = (args.dir or default_dir()).resolve()
    try:
        return _dispatch(args.command, directory, args)
    except (build.GoMissingError, build.BuildError, ControlPlaneError, KubectlError, RuntimeError) as err:
        _stderr_log(f"[controlplane] FAILED: {err}")
        return 1


def _dispatch(command: str, directory: Path, args: argparse.Namespace) -> int:
    if command == "up":
        cp = up(directory)
        print("\n".join(cp.export_lines()))
        if args.spreadhook:
            port = up_spreadhook(cp)
            workdir = spreadhook_dir(cp)
            print(f"# spreadhook webhook + reconciler: https://127.0.0.1:{port} (log {workdir / 'spreadhook.log'})")
            print("# try: kubectl apply -n default -f deploy/examples/sidecar-on-cloud.yaml && "
                  "kubectl scale deployment/accel-app --replicas=12 && spreadhook status accel-app -n default")
        return 0
    if command == "down":
        down(directory)
        return 0
    if command == "build":
        print(build.ensure_binaries())
        return 0
    if command == "watchdog":
        watchdog(directory, args.owner, remove_dir=args.remove_dir)
        return 0
    cp = ControlPlane(directory)
    running = cp.is_running()
    if command == "status":
        print(f"running at {cp.server}" if running else f"not running ({directory})")
        return 0 if running else 3
    if not running:
        _stderr_log(f"[controlplane] not running in {directory}; run scripts/controlplane up")
        return 3
    print("\n".join(cp.export_lines()))
    return 0


def temporary_dir(prefix: str = "spreadhook-cp-") -> Path:
    """A fresh directory for a throwaway cluster (the pytest fixture's)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


if __name__ == "__main__":
    raise SystemExit(main())
