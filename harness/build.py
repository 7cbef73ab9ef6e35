"""Build (or reuse) the control-plane binaries from their official Go modules.

There is no container engine and no download of prebuilt binaries on the
machines spreadhook is tested on, but the Go toolchain and the Go module proxy
are reachable, so every binary is compiled from its module at the versions in
:mod:`harness.versions` and cached under
``${XDG_CACHE_HOME:-~/.cache}/spreadhook/controlplane/<key>/bin``. A second run
finds every binary there and builds nothing.

``k8s.io/kubernetes`` cannot be depended on as is: its go.mod requires its
staging modules (k8s.io/api, k8s.io/client-go, ...) at ``v0.0.0`` and points
them at ``./staging`` with replace directives that only apply inside its own
repository. So each build happens in a throwaway main module generated under
the cache, whose go.mod replaces every staging module with the published
``v0.X.Y`` tag of the same release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import versions
from harness.versions import Binary

Log = Callable[[str], None]

GO_INSTALL_HINT = (
    "Go is needed to build the test control plane (kube-apiserver, etcd, kwok, ... from their Go modules). "
    "Install Go >= 1.26 from https://go.dev/dl/ (or your distribution's golang package) and make sure "
    "`go` is on PATH, then run scripts/build-controlplane."
)


class GoMissingError(RuntimeError):
    """Raised when no Go toolchain is on PATH, so callers can skip instead of fail."""


class BuildError(RuntimeError):
    """Raised when `go build` fails; the message ends with the tail of its log."""


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_root() -> Path:
    """The user's cache folder for control-plane builds (XDG_CACHE_HOME honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spreadhook" / "controlplane"


def key_dir() -> Path:
    """Cache folder for exactly the pinned versions."""
    return cache_root() / versions.cache_key()


def bin_dir() -> Path:
    """Where the binaries for the pinned versions live once built."""
    return key_dir() / "bin"


def missing_binaries(directory: Path | None = None) -> list[Binary]:
    """Binaries not yet present (and executable) in the cache."""
    target = directory or bin_dir()
    return [b for b in versions.ALL_BINARIES if not os.access(target / b.name, os.X_OK)]


def go_executable() -> str:
    """Path of `go`, or GoMissingError with instructions on how to get it."""
    go = shutil.which("go")
    if go is None:
        raise GoMissingError(GO_INSTALL_HINT)
    return go


@dataclass(frozen=True)
class BuildGroup:
    """Binaries built together from one throwaway module (shared compile work)."""

    name: str
    binaries: tuple[Binary, ...]
    requires: tuple[tuple[str, str], ...]
    ldflags: tuple[str, ...]


def _kubernetes_ldflags() -> tuple[str, ...]:
    """Version stamps `make` would set; kwokctl and `kubectl version` read them."""
    major, minor = versions.KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (
        f"-X {pkg}.gitVersion={versions.KUBERNETES_VERSION}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
        f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
    )


def _kwok_ldflags() -> tuple[str, ...]:
    """Tell kwokctl which Kubernetes it drives, so it picks the matching flags."""
    return (
        f"-X sigs.k8s.io/kwok/pkg/consts.Version={versions.KWOK_VERSION}",
        f"-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={versions.KUBERNETES_VERSION}",
    )


def build_groups() -> tuple[BuildGroup, ...]:
    """Smallest first, so kwok and etcd are usable long before kube-apiserver is."""
    return (
        BuildGroup("kwok", versions.KWOK_BINARIES, (("sigs.k8s.io/kwok", versions.KWOK_VERSION),), _kwok_ldflags()),
        BuildGroup("etcd", versions.ETCD_BINARIES, (("go.etcd.io/etcd/server/v3", versions.ETCD_VERSION),), ()),
        BuildGroup(
            "kubernetes",
            versions.KUBERNETES_BINARIES,
            (("k8s.io/kubernetes", versions.KUBERNETES_VERSION),),
            _kubernetes_ldflags(),
        ),
    )


def go_env() -> dict[str, str]:
    """Environment for `go`: proxy only, local toolchain, static binaries, 2-way parallelism."""
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "").split()
    flags = [f for f in flags if not f.startswith(("-mod=", "-p="))]
    flags += ["-mod=mod", f"-p={min(os.cpu_count() or 2, 4)}"]
    env["GOFLAGS"] = " ".join(flags)
    env["GOTOOLCHAIN"] = "local"
    env["CGO_ENABLED"] = "0"
    env["GOPROXY"] = module_proxy(env.get("GOPROXY", ""))
    return env


def module_proxy(configured: str) -> str:
    """GOPROXY without `direct`/`off`: modules come from a module proxy, never straight from VCS hosts."""
    proxies = [p for p in re.split(r"[,|]", configured) if p.strip() and p.strip() not in ("direct", "off")]
    return ",".join(proxies) or "https://proxy.golang.org"


def _run_go(args: list[str], cwd: Path, log_file: Path | None = None) -> str:
    """Run `go ARGS` in CWD; return stdout, raise BuildError with the output on failure."""
    cmd = [go_executable(), *args]
    if log_file is None:
        proc = subprocess.run(cmd, cwd=cwd, env=go_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr[-4000:]}")
        return proc.stdout
    with log_file.open("w") as out:
        proc2 = subprocess.run(cmd, cwd=cwd, env=go_env(), stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc2.returncode != 0:
        tail = log_file.read_text(errors="replace")[-4000:]
        raise BuildError(f"{' '.join(cmd)} failed in {cwd} (log: {log_file}):\n{tail}")
    return ""


_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s*=>\s*\./staging/", re.MULTILINE)


def kubernetes_staging_modules(workdir: Path) -> list[str]:
    """Every k8s.io/* module k8s.io/kubernetes points at ./staging, read from its own go.mod."""
    out = _run_go(["mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES_VERSION}"], workdir)
    gomod = Path(json.loads(out)["GoMod"])
    modules = _STAGING_REPLACE.findall(gomod.read_text())
    if not modules:
        raise BuildError(f"no staging replace directives found in {gomod}")
    return sorted(set(modules))


def render_go_mod(group: BuildGroup, staging: list[str]) -> str:
    """The throwaway go.mod: require the pinned module, replace staging modules by published tags."""
    lines = [f"module spreadhook.local/controlplane-build/{group.name}", "", "go 1.26.0", ""]
    if group.name == "kubernetes":
        lines += ["godebug default=go1.26", ""]
    lines += ["require ("] + [f"\t{mod} {ver}" for mod, ver in group.requires] + [")", ""]
    if staging:
        lines += ["replace ("]
        lines += [f"\t{mod} => {mod} {versions.STAGING_VERSION}" for mod in staging]
        lines += [")", ""]
    return "\n".join(lines)


def _prepare_module(group: BuildGroup, workdir: Path) -> None:
    """Write the throwaway module (go.mod + an empty main-module package) into WORKDIR."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(render_go_mod(group, []))
    staging = kubernetes_staging_modules(workdir) if group.name == "kubernetes" else []
    (workdir / "go.mod").write_text(render_go_mod(group, staging))


@contextlib.contextmanager
def _heartbeat(label: str, log_file: Path, log: Log, every: float = 30.0) -> Iterator[None]:
    """Print `label: elapsed, last package` every EVERY seconds while a build runs."""
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            last = ""
            with contextlib.suppress(OSError):
                lines = log_file.read_text(errors="replace").strip().splitlines()
                last = lines[-1][:100] if lines else ""
            log(f"[build] {label}: {_fmt(time.monotonic() - start)} elapsed ... {last}")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _fmt(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def build_group(group: BuildGroup, log: Log = _stderr_log) -> float:
    """Build one group's binaries into the cache; return the seconds it took."""
    workdir = key_dir() / "build" / group.name
    out_dir = key_dir() / "build" / f"{group.name}.out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    names = ", ".join(b.name for b in group.binaries)
    log(f"[build] {group.name}: building {names} (from the Go module proxy; cold: ~7 min on 2 cores)")
    start = time.monotonic()
    _prepare_module(group, workdir)
    log_file = key_dir() / "build" / f"{group.name}.log"
    args = [
        "build",
        "-v",
        "-trimpath",
        "-ldflags",
        " ".join(("-s", "-w", *group.ldflags)),
        "-o",
        str(out_dir),
    ]
    with _heartbeat(f"{group.name} ({names})", log_file, log):
        _run_go(args + [b.package for b in group.binaries], workdir, log_file)
    _install(group, out_dir)
    elapsed = time.monotonic() - start
    log(f"[build] {group.name}: done in {_fmt(elapsed)}")
    return elapsed


def go_output_name(package: str) -> str:
    """The file `go build -o DIR/` writes for PACKAGE: its last element, skipping a /vN suffix."""
    parts = package.rstrip("/").split("/")
    return parts[-2] if re.fullmatch(r"v\d+", parts[-1]) else parts[-1]


def _install(group: BuildGroup, out_dir: Path) -> None:
    """Move built binaries into bin/ under their harness names, atomically per file."""
    target = bin_dir()
    target.mkdir(parents=True, exist_ok=True)
    for binary in group.binaries:
        built = out_dir / go_output_name(binary.package)
        if not built.exists():
            raise BuildError(f"go build did not produce {built} for {binary.name}")
        os.replace(built, target / binary.name)
    shutil.rmtree(out_dir, ignore_errors=True)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialize builds across processes (two pytest sessions, CLI + tests)."""
    key_dir().mkdir(parents=True, exist_ok=True)
    with (key_dir() / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_binaries(log: Log = _stderr_log) -> Path:
    """Return the bin dir with every pinned binary, building only what is missing."""
    if not missing_binaries():
        return bin_dir()
    go_executable()
    with _build_lock():
        start = time.monotonic()
        for group in build_groups():
            if any(b in missing_binaries() for b in group.binaries):
                build_group(group, log)
        log(f"[build] all binaries ready in {bin_dir()} ({_fmt(time.monotonic() - start)})")
    return bin_dir()


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.build`: build what is missing and print the bin dir."""
    del argv
    start = time.monotonic()
    try:
        path = ensure_binaries()
    except (GoMissingError, BuildError) as err:
        _stderr_log(f"[build] FAILED: {err}")
        return 1
    _stderr_log(f"[build] finished in {time.monotonic() - start:.1f}s")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
