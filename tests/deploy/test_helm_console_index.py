"""The console's calls index volume in the Helm chart (docs/console.md, "The calls index"):
an emptyDir by default, a PersistentVolumeClaim on request (then one replica, Recreate)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.conftest import Rendered, RenderError, render
from tests.deploy.test_helm import container, env_of

pytestmark = pytest.mark.timeout(900)
INDEX_DIR = "/var/lib/callrec/console-index"


def index_volume(manifests: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = manifests.deployments()["console"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
    assert env_of(manifests, deployment)["CALLREC_CONSOLE_INDEX_DIR"] == INDEX_DIR
    return deployment, volumes[mounts[INDEX_DIR]["name"]]


def test_the_index_lives_on_its_own_emptydir_by_default(
    rendered: dict[str, Rendered], profile: str
) -> None:
    deployment, volume = index_volume(rendered[profile])
    assert volume["emptyDir"] == {"sizeLimit": "2Gi"}
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_an_existing_claim_keeps_the_index_across_pods_one_at_a_time(helm: str) -> None:
    manifests = render(helm, set_values={"console.index.existingClaim": "console-index"})
    deployment, volume = index_volume(manifests)
    assert volume["persistentVolumeClaim"] == {"claimName": "console-index"}
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(RenderError, match="one console opens the index file at a time"):
        render(
            helm,
            set_values={
                "console.index.existingClaim": "console-index",
                "console.replicaCount": "2",
            },
        )
