"""Deployment tools that the tests and operators need: Helm, built from source.

Like deploy/local/install.py, this module is standard-library only and installs
into the cache ``$CALLREC_CACHE_DIR`` (default ``~/.cache/callrec``), idempotently
and atomically, serialised by a file lock::

    python -m deploy.tools helm          # install if needed, print the binary's path
    python -m deploy.tools helm --check  # exit 0 if installed, 3 if not

Helm comes from the Go module proxy (``go install helm.sh/helm/v3/cmd/helm@…``):
this machine, developers' machines and CI reach package registries only, never
GitHub release downloads. Go's module and build caches live under
``<cache>/go`` (shared with the MinIO build of deploy/local/install.py).

Kubernetes version: every ``helm template``/``helm lint`` call passes
``--kube-version KUBE_VERSION`` (Helm would otherwise assume its own compiled-in
default), and the tests validate the output with ``kubernetes-validate`` against
the same version.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.local import install as local_install
from deploy.local.install import cache_dir, install_lock

log = logging.getLogger(__name__)

HELM_MODULE = "helm.sh/helm/v3"
#: Newest v3.21 patch on the Go module proxy (``go list -m -versions helm.sh/helm/v3``).
HELM_VERSION = "v3.21.4"
#: Kubernetes version the chart is rendered and validated for: one that both Helm and
#: the pinned kubernetes-validate know, and that is in upstream support.
KUBE_VERSION = "1.34.0"


class ToolError(Exception):
    """Base class of the errors raised here."""


class ToolMissingError(ToolError):
    """``go`` is not on PATH."""


class InstallError(ToolError):
    """``go install`` failed."""


def helm_binary() -> Path:
    """Path of the pinned Helm executable (it may not exist yet)."""
    return cache_dir() / "helm" / HELM_VERSION / "helm"


def helm_installed() -> bool:
    return os.access(helm_binary(), os.X_OK)


def go_env() -> dict[str, str]:
    """deploy/local/install.py's Go environment (caches under the cache dir), without
    cgo: Helm's CLI needs none, and a static binary runs in any container as well."""
    env = local_install.go_env()
    env.setdefault("CGO_ENABLED", "0")
    return env


def install_helm() -> Path:
    """Build the pinned Helm into the cache unless it is there; return its path.

    Cold: about 3 minutes on 2 cores (Helm v3.21 needs Go 1.26+; its modules and build
    cache take ~1 GB under ``<cache>/go``). Warm: instant.
    Raises :class:`ToolMissingError` without ``go`` and :class:`InstallError` on failure.
    """
    target = helm_binary()
    if helm_installed():
        return target
    go = shutil.which("go")
    if go is None:
        raise ToolMissingError(
            "go is not on PATH: Helm is built with `go install` from the Go module proxy "
            f"(Helm {HELM_VERSION} needs Go 1.26+)"
        )
    with install_lock():
        if helm_installed():  # another process finished it while we waited
            return target
        started = time.monotonic()
        log_path = cache_dir() / "logs" / f"helm-{HELM_VERSION}-install.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        gobin = Path(tempfile.mkdtemp(prefix="gobin-", dir=cache_dir()))
        try:
            env = go_env()
            env["GOBIN"] = str(gobin)
            cmd = [go, "install", f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"]
            log.info("building Helm %s: %s (log: %s)", HELM_VERSION, " ".join(cmd), log_path)
            with log_path.open("w") as out:
                result = subprocess.run(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=cache_dir(),
                    check=False,
                )
            if result.returncode != 0:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                raise InstallError(
                    f"go install of Helm {HELM_VERSION} failed ({result.returncode}); "
                    f"{log_path}:\n{tail}"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            (gobin / "helm").replace(target)  # atomic: never a half-written binary
        finally:
            shutil.rmtree(gobin, ignore_errors=True)
    log.info("installed Helm %s at %s (%.0fs)", HELM_VERSION, target, time.monotonic() - started)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.tools", description=__doc__.split("\n\n", 1)[0]
    )
    sub = parser.add_subparsers(dest="tool", required=True)
    helm = sub.add_parser("helm", help=f"install Helm {HELM_VERSION}; print its path")
    helm.add_argument("--check", action="store_true", help="only report whether it is installed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.check:
        print(helm_binary())
        return 0 if helm_installed() else 3
    try:
        print(install_helm())
    except ToolError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
