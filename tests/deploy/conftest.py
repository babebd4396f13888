"""Fixtures for the deployment assets: Helm (built by deploy/tools.py), rendering, settings.

Nothing here skips: without ``go`` the Helm install fails and so do the tests that
render the chart. That is what CI must see.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from callrec.configdoc import SERVICES, env_name
from deploy import tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "callrec"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
OBSERVABILITY = ROOT / "deploy" / "observability"
COMPOSE_DIR = ROOT / "deploy" / "compose"
RELEASE = "callrec"
NAMESPACE = "calls"
KUBE_VERSION = tools.KUBE_VERSION

#: Values files of the two installations every chart test covers.
PROFILES: dict[str, tuple[Path, ...]] = {
    "default": (),
    "production": (PRODUCTION_VALUES,),
}


class RenderError(Exception):
    """``helm template`` failed; the message is Helm's stderr."""


@dataclass(frozen=True)
class Rendered:
    """The manifests of one ``helm template`` run."""

    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        names = [d["metadata"]["name"] for d in self.of_kind(kind)]
        raise KeyError(f"no {kind} {name!r} in {names}")

    def deployments(self) -> dict[str, dict[str, Any]]:
        """Deployments by component (``app.kubernetes.io/component``)."""
        return {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in self.of_kind("Deployment")
        }


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned Helm binary, built with ``go install`` into the cache on first use."""
    return str(tools.install_helm())


def helm_template(
    helm: str,
    values_files: Sequence[Path] = (),
    set_values: Mapping[str, str] = {},
    *,
    set_json: Mapping[str, str] = {},
) -> str:
    cmd = [
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for path in values_files:
        cmd += ["--values", str(path)]
    for key, value in set_values.items():
        cmd += ["--set", f"{key}={value}"]
    for key, value in set_json.items():
        cmd += ["--set-json", f"{key}={value}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def render(
    helm: str,
    values_files: Sequence[Path] = (),
    set_values: Mapping[str, str] = {},
    *,
    set_json: Mapping[str, str] = {},
) -> Rendered:
    text = helm_template(helm, values_files, set_values, set_json=set_json)
    return Rendered([d for d in yaml.safe_load_all(text) if d])


@pytest.fixture(scope="session")
def rendered(helm: str) -> dict[str, Rendered]:
    """The chart rendered with each profile's values."""
    return {name: render(helm, files) for name, files in PROFILES.items()}


@pytest.fixture(params=sorted(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings_env_names(service: str) -> set[str]:
    """The CALLREC_* names the service's settings class reads."""
    try:
        cls = SERVICES[service]
    except KeyError:
        pytest.fail(f"callrec.configdoc.SERVICES has no {service!r} (it has {sorted(SERVICES)})")
    return {env_name(field) for field in cls.model_fields}


@pytest.fixture
def clean_callrec_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No CALLREC_* variable of the test process leaks into a settings object."""
    for name in list(os.environ):
        if name.startswith("CALLREC_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
