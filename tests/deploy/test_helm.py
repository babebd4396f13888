"""The Helm chart: lint, strict schema validation, and what the rendered manifests promise.

Every chart test runs with the default values and with ci/production-values.yaml.
Environment wiring is compared with ``callrec.configdoc.SERVICES``, so the chart and
the code cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from callrec.configdoc import SERVICES, env_name
from deploy import tools
from tests.deploy.conftest import (
    CHART,
    OBSERVABILITY,
    PRODUCTION_VALUES,
    PROFILES,
    RELEASE,
    Rendered,
    RenderError,
    helm_template,
    load_yaml,
    render,
    settings_env_names,
)

#: Kinds that are CustomResourceDefinitions (Prometheus Operator): kubernetes-validate
#: has no schema for them, so test_monitoring_objects checks their structure.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: The first test here builds Helm when the cache is cold (about 3 minutes on 2 cores).
pytestmark = pytest.mark.timeout(900)
COMPONENTS = ("ingest", "recorder", "analyzer", "control", "console")
PORT_SETTING = {c: f"CALLREC_{c.upper()}_PORT" for c in COMPONENTS}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per callrec pod"
    return containers[0]


def config_map_data(rendered: Rendered, deployment: dict[str, Any]) -> dict[str, str]:
    """Merged data of the ConfigMaps the container takes whole (envFrom)."""
    data: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        assert "configMapRef" in source, f"only ConfigMaps go in envFrom, got {source}"
        data.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    return data


def env_of(rendered: Rendered, deployment: dict[str, Any]) -> dict[str, Any]:
    """Every variable of the container: name -> a literal value or its valueFrom."""
    env: dict[str, Any] = dict(config_map_data(rendered, deployment))
    for var in container(deployment).get("env", []):
        assert var["name"] not in env, f"{var['name']} is set twice"
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def secret_fields(service: str) -> set[str]:
    """CALLREC_* names of the service's SecretStr settings."""
    names = set()
    for field, info in SERVICES[service].model_fields.items():
        if "SecretStr" in repr(info.annotation) or info.annotation is SecretStr:
            names.add(env_name(field))
    return names


# -- helm lint and strict validation ----------------------------------------------------


def test_helm_is_the_pinned_version(helm: str) -> None:
    out = subprocess.run(
        [helm, "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True
    ).stdout
    # `go install` builds carry the major.minor Helm sets in its source, not the tag.
    assert tools.HELM_VERSION.startswith(out.strip()), out


def test_helm_install_is_cached(helm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second install is a no-op: it does not even look for go."""
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    assert str(tools.install_helm()) == helm


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_helm_lint_strict(helm: str, name: str) -> None:
    cmd = [helm, "lint", "--strict", "--kube-version", tools.KUBE_VERSION, str(CHART)]
    for path in PROFILES[name]:
        cmd += ["--values", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_manifests_pass_kubernetes_validate_strict(helm: str, name: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(helm_template(helm, PROFILES[name]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            tools.KUBE_VERSION,
            str(manifest),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output, output
    # kubernetes-validate only warns about kinds it has no schema for: those must be
    # the Prometheus Operator's, nothing else may go unchecked.
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert "monitoring.coreos.com/v1" in line, line
    passed = sum(1 for line in output.splitlines() if line.startswith("INFO") and "passed" in line)
    docs = render(helm, PROFILES[name]).docs
    assert passed == sum(1 for d in docs if d["kind"] not in CRD_KINDS)


def test_every_core_kind_has_a_strict_schema(rendered: dict[str, Rendered]) -> None:
    """The same check through the library: no core object is silently skipped."""
    for manifests in rendered.values():
        for doc in manifests.docs:
            if doc["kind"] in CRD_KINDS:
                continue
            kubernetes_validate.validate(doc, tools.KUBE_VERSION, strict=True)


# -- configuration wiring ---------------------------------------------------------------


def test_every_service_has_a_deployment(rendered: dict[str, Rendered]) -> None:
    for manifests in rendered.values():
        deployments = manifests.deployments()
        assert set(deployments) == set(COMPONENTS)
        for component, deployment in deployments.items():
            assert container(deployment)["args"] == [component]


@pytest.mark.parametrize("component", COMPONENTS)
def test_env_names_are_settings_fields(
    rendered: dict[str, Rendered], profile: str, component: str
) -> None:
    manifests = rendered[profile]
    env = env_of(manifests, manifests.deployments()[component])
    callrec_names = {name for name in env if name.startswith("CALLREC_")}
    unknown = callrec_names - settings_env_names(component)
    assert not unknown, f"{component} sets variables its settings do not read: {sorted(unknown)}"
    assert set(env) == callrec_names, "only CALLREC_* settings by default"


@pytest.mark.parametrize("component", COMPONENTS)
def test_rendered_env_builds_the_settings_object(
    rendered: dict[str, Rendered],
    profile: str,
    component: str,
    clean_callrec_env: pytest.MonkeyPatch,
) -> None:
    """What the pod gets parses: types, Literals and validators of the settings accept it."""
    manifests = rendered[profile]
    env = env_of(manifests, manifests.deployments()[component])
    for name, value in env.items():
        if isinstance(value, dict):  # valueFrom: a Secret key or the pod name
            value = "pod-0" if "fieldRef" in value else "from-a-secret"
        clean_callrec_env.setenv(name, value)
    settings = SERVICES[component]()
    values = load_yaml(CHART / "values.yaml")
    if profile == "production":
        values = load_yaml(PRODUCTION_VALUES)
    if component == "console":  # no Kafka: it reads the archive
        assert settings.archive_uri == values["s3"]["archiveUri"]
    else:
        assert settings.kafka_bootstrap == values["kafka"]["bootstrap"]  # type: ignore[attr-defined]
    port = getattr(settings, f"{component}_port")
    assert port == container(manifests.deployments()[component])["ports"][0]["containerPort"]


@pytest.mark.parametrize(
    "values_file", [CHART / "values.yaml", PRODUCTION_VALUES], ids=["values.yaml", "production"]
)
def test_config_maps_in_values_name_real_settings(values_file: Path) -> None:
    values = load_yaml(values_file)
    for component in COMPONENTS:
        keys = set((values.get(component) or {}).get("config") or {})
        unknown = keys - settings_env_names(component)
        assert not unknown, f"{values_file.name}: {component}.config has unknown {sorted(unknown)}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_secrets_never_in_config_maps(
    rendered: dict[str, Rendered], profile: str, component: str
) -> None:
    manifests = rendered[profile]
    deployment = manifests.deployments()[component]
    data = config_map_data(manifests, deployment)
    secrets = secret_fields(component)
    assert secrets, "the settings declare their secrets as SecretStr"
    assert not secrets & set(data), f"secrets in a ConfigMap: {sorted(secrets & set(data))}"
    for var in container(deployment).get("env", []):
        if var["name"] in secrets:
            assert "secretKeyRef" in var["valueFrom"], var


def test_production_uses_existing_secrets(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["production"]
    assert manifests.of_kind("Secret") == [], "every secret comes from an existing Secret"
    values = load_yaml(PRODUCTION_VALUES)
    refs = {}
    for component, deployment in manifests.deployments().items():
        for var in container(deployment).get("env", []):
            if "secretKeyRef" in var.get("valueFrom", {}):
                refs[(component, var["name"])] = var["valueFrom"]["secretKeyRef"]
    assert refs[("ingest", "CALLREC_INGEST_TOKENS")] == {
        "name": values["ingest"]["auth"]["existingSecret"],
        "key": values["ingest"]["auth"]["tokensKey"],
    }
    for component in ("ingest", "recorder", "analyzer"):  # the console has no Kafka
        assert refs[(component, "CALLREC_KAFKA_SASL_PASSWORD")] == {
            "name": values["kafka"]["sasl"]["existingSecret"],
            "key": values["kafka"]["sasl"]["passwordKey"],
        }
    # S3 through the pod identity (IRSA): no static keys anywhere.
    assert not any(name.startswith("CALLREC_S3_ACCESS") for _, name in refs)
    sa = manifests.get("ServiceAccount", f"{RELEASE}-recorder")
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    assert refs[("console", "CALLREC_CONSOLE_SESSION_SECRET")] == {
        "name": values["console"]["auth"]["existingSecret"],
        "key": "console-session-secret",
    }
    console = manifests.get("ServiceAccount", f"{RELEASE}-console")
    assert console["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] != (
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]), "its own, narrower role"


def test_inline_secrets_go_to_the_charts_secret(helm: str) -> None:
    manifests = render(
        helm,
        set_values={
            "ingest.auth.tokens[0]": "t1",
            "ingest.auth.tokens[1]": "t2",
            "s3.credentials.accessKeyId": "AKIAEXAMPLE",
            "s3.credentials.secretAccessKey": "wJalrXUtnFEMI",
        },
    )
    (secret,) = manifests.of_kind("Secret")
    assert set(secret["data"]) == {"ingest-tokens", "s3-access-key-id", "s3-secret-access-key"}
    assert base64.b64decode(secret["data"]["ingest-tokens"]) == b"t1,t2"
    deployments = manifests.deployments()
    recorder_env = {v["name"]: v for v in container(deployments["recorder"])["env"]}
    assert recorder_env["CALLREC_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "s3-secret-access-key",
    }
    ingest_env = {v["name"] for v in container(deployments["ingest"])["env"]}
    assert "CALLREC_S3_SECRET_ACCESS_KEY" not in ingest_env, "ingest gets no S3 keys"
    # Changing a secret restarts the pods.
    before = render(helm).deployments()["ingest"]["spec"]["template"]["metadata"]["annotations"]
    after = deployments["ingest"]["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/secret"] != after["checksum/secret"]


def test_s3_credentials_from_an_existing_secret(helm: str) -> None:
    manifests = render(
        helm,
        set_values={
            "s3.credentials.existingSecret": "callrec-s3",
            "s3.credentials.accessKeyIdKey": "id",
            "s3.credentials.secretAccessKeyKey": "secret",
            # The existing Secret wins: inline keys are not copied anywhere.
            "s3.credentials.accessKeyId": "AKIAINLINE",
            "s3.credentials.secretAccessKey": "inline-secret",
        },
    )
    assert manifests.of_kind("Secret") == []
    for component, deployment in manifests.deployments().items():
        env = {v["name"]: v for v in container(deployment)["env"]}
        if component == "ingest":
            assert not {n for n in env if n.startswith("CALLREC_S3_")}, "ingest gets no S3 keys"
            continue
        assert env["CALLREC_S3_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
            "name": "callrec-s3", "key": "id"
        }
        assert env["CALLREC_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "callrec-s3", "key": "secret"
        }
        assert "AKIAINLINE" not in json.dumps(deployment)


def test_existing_secret_wins_over_inline(helm: str) -> None:
    manifests = render(
        helm,
        set_values={
            "ingest.auth.tokens[0]": "inline",
            "ingest.auth.existingSecret": "mine",
        },
    )
    assert manifests.of_kind("Secret") == []
    env = {v["name"]: v for v in container(manifests.deployments()["ingest"])["env"]}
    assert env["CALLREC_INGEST_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] == "mine"


# -- which CALLREC_* names <component>.config and extraEnv may hold ------------------------

#: Per component: the settings config may set, those the chart sets, the secrets.
SETTINGS_LISTS: dict[str, dict[str, Any]] = load_yaml(CHART / "files" / "settings.yaml")

#: Values that turn on every setting the chart can derive (and every secret reference).
EVERY_MANAGED_SETTING = {
    "kafka.securityProtocol": "SASL_SSL",
    "kafka.sasl.mechanism": "SCRAM-SHA-512",
    "kafka.sasl.username": "callrec",
    "kafka.sasl.existingSecret": "kafka",
    "kafka.tls.caSecret": "kafka-ca",
    "s3.endpointUrl": "https://minio.example.internal",
    "s3.sse": "aws:kms",
    "s3.sseKmsKeyId": "arn:aws:kms:eu-west-1:111122223333:key/k",
    "s3.objectLock.mode": "GOVERNANCE",
    "s3.objectLock.days": "1",
    "s3.credentials.existingSecret": "s3",
    "ingest.auth.existingSecret": "tokens",
    "control.auth.existingSecret": "control",
    "console.auth.existingSecret": "console",
    "console.export.existingSecret": "console-export",
}


def extra_env(*entries: dict[str, Any]) -> str:
    return json.dumps(list(entries))


@pytest.mark.parametrize("component", COMPONENTS)
def test_settings_lists_match_the_settings_classes(component: str) -> None:
    """Every setting of the service is in exactly one list: a new one fails here until the
    chart says whether config may set it."""
    lists = SETTINGS_LISTS[component]
    config, managed, secrets = set(lists["config"]), set(lists["managed"]), set(lists["secrets"])
    assert len(config) == len(lists["config"]), "no duplicates"
    assert not (config & managed or config & secrets or managed & secrets)
    fields = settings_env_names(component)
    listed = config | managed | secrets
    assert listed == fields, (
        f"files/settings.yaml, {component}: not listed {sorted(fields - listed)}, "
        f"not settings {sorted(listed - fields)}"
    )
    # Every SecretStr setting is refused in config; nothing else is called a secret.
    assert secrets == secret_fields(component)


@pytest.mark.parametrize("component", COMPONENTS)
def test_managed_list_is_what_the_chart_sets(helm: str, component: str) -> None:
    manifests = render(
        helm, set_values={**EVERY_MANAGED_SETTING, "analyzer.gpu.enabled": "true"}
    )
    env = env_of(manifests, manifests.deployments()[component])
    own = set(load_yaml(CHART / "values.yaml")[component]["config"])
    lists = SETTINGS_LISTS[component]
    assert set(env) - own == set(lists["managed"]) | set(lists["secrets"])


def test_config_takes_every_listed_setting(helm: str) -> None:
    settings = {
        f"{component}.config.{name}": "1"
        for component in COMPONENTS
        for name in SETTINGS_LISTS[component]["config"]
    }
    manifests = render(helm, set_values=settings)
    for component, deployment in manifests.deployments().items():
        data = config_map_data(manifests, deployment)
        assert set(SETTINGS_LISTS[component]["config"]) <= set(data), component


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Settings the chart derives: the drain grace must stay what
        # terminationGracePeriodSeconds was computed from.
        (
            {"ingest.config.CALLREC_INGEST_DRAIN_GRACE_S": "600"},
            r"ingest\.config: CALLREC_INGEST_DRAIN_GRACE_S is set by the chart "
            r"\(from ingest\.drain\.graceSeconds\)",
        ),
        (
            {"analyzer.config.CALLREC_ANALYZER_DEVICE": "cuda"},
            r"CALLREC_ANALYZER_DEVICE is set by the chart \(from analyzer\.gpu\.enabled\)",
        ),
        # Secrets never go into a ConfigMap.
        (
            {"ingest.config.CALLREC_INGEST_TOKENS": "t1"},
            r"ingest\.config: CALLREC_INGEST_TOKENS is a secret: .*ingest\.auth\.existingSecret",
        ),
        (
            {"recorder.config.CALLREC_S3_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"},
            r"CALLREC_S3_SECRET_ACCESS_KEY is a secret",
        ),
        # A typo, and another service's setting: the service would ignore either.
        (
            {"ingest.config.CALLREC_INGEST_LINGERMS": "5"},
            r"CALLREC_INGEST_LINGERMS is not a setting of `callrec ingest`.*"
            r"CALLREC_INGEST_LINGER_MS",
        ),
        (
            {"recorder.config.CALLREC_ANALYZER_MODEL": "small.en"},
            r"recorder\.config: CALLREC_ANALYZER_MODEL is not a setting of `callrec recorder`",
        ),
    ],
    ids=["managed", "managed-device", "secret", "s3-secret", "typo", "other-service"],
)
def test_config_refuses_names_it_must_not_hold(
    helm: str, values: dict[str, str], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render(helm, set_values=values)


@pytest.mark.parametrize(
    ("component", "name"),
    [(c, name) for c in COMPONENTS for name in sorted(SETTINGS_LISTS[c]["managed"])],
)
def test_extra_env_refuses_chart_managed_names(helm: str, component: str, name: str) -> None:
    """An extraEnv entry would win over the ConfigMap: e.g. a drain grace of 600 s under a
    terminationGracePeriodSeconds of 50 s would have ingest killed mid-drain."""
    entry = {"name": name, "value": "600"}
    message = rf"{component}\.extraEnv\[0\]: {name} is set by the chart"
    with pytest.raises(RenderError, match=message):
        render(helm, set_json={f"{component}.extraEnv": extra_env(entry)})


def test_extra_env_refuses_secrets_typos_and_second_sources(helm: str) -> None:
    secret = {
        "name": "CALLREC_KAFKA_SASL_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "mine", "key": "password"}},
    }
    message = r"ingest\.extraEnv\[1\]: CALLREC_KAFKA_SASL_PASSWORD is a secret"
    with pytest.raises(RenderError, match=message):
        render(
            helm,
            set_json={"ingest.extraEnv": extra_env({"name": "TZ", "value": "UTC"}, secret)},
        )
    with pytest.raises(RenderError, match=r"CALLREC_RECORDER_GRACEMS is not a setting"):
        render(
            helm,
            set_json={"recorder.extraEnv": extra_env({"name": "CALLREC_RECORDER_GRACEMS",
                                                      "value": "800"})},
        )
    with pytest.raises(RenderError, match=r"CALLREC_INGEST_CODEC is also in ingest\.config"):
        render(
            helm,
            set_json={"ingest.extraEnv": extra_env({"name": "CALLREC_INGEST_CODEC",
                                                    "value": "PCMU/8000"})},
        )


def test_extra_env_takes_settings_the_chart_leaves_open(helm: str) -> None:
    model = {
        "name": "CALLREC_ANALYZER_MODEL",
        "valueFrom": {"configMapKeyRef": {"name": "models", "key": "current"}},
    }
    threads = {"name": "OMP_NUM_THREADS", "value": "2"}
    manifests = render(helm, set_json={"analyzer.extraEnv": extra_env(model, threads)})
    env = env_of(manifests, manifests.deployments()["analyzer"])
    assert env["CALLREC_ANALYZER_MODEL"] == model["valueFrom"]
    assert env["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize(
    "key", ["ingest.config.ingest_port", "ingest.replicaCountt", "kafka.securityProtocol"]
)
def test_values_schema_rejects_bad_values(helm: str, key: str) -> None:
    with pytest.raises(RenderError, match="schema"):
        render(helm, set_values={key: "NOPE"})


def test_config_change_restarts_pods(helm: str) -> None:
    def checksum(manifests: Rendered) -> str:
        annotations = manifests.deployments()["recorder"]["spec"]["template"]["metadata"]
        return str(annotations["annotations"]["checksum/config"])

    changed = render(helm, set_values={"recorder.config.CALLREC_RECORDER_GRACE_MS": "800"})
    assert checksum(render(helm)) != checksum(changed)


# -- probes, resources, security ---------------------------------------------------------


@pytest.mark.parametrize("component", COMPONENTS)
def test_probes_hit_healthz_and_readyz_on_the_service_port(
    rendered: dict[str, Rendered], profile: str, component: str
) -> None:
    manifests = rendered[profile]
    deployment = manifests.deployments()[component]
    c = container(deployment)
    (port,) = c["ports"]
    configured = int(config_map_data(manifests, deployment)[PORT_SETTING[component]])
    assert port["containerPort"] == configured
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    # Liveness must not kill a pod that is only not ready (e.g. Kafka down).
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 30


def all_pod_specs(manifests: Rendered) -> list[tuple[str, dict[str, Any]]]:
    specs = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in manifests.of_kind("Deployment") + manifests.of_kind("Job")
    ]
    assert len(specs) == 6  # ingest, recorder, analyzer, control, console, topics job
    return specs


def test_resources(rendered: dict[str, Rendered], profile: str) -> None:
    for name, spec in all_pod_specs(rendered[profile]):
        for c in spec["containers"]:
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], f"{name}: a memory limit bounds a leak"


def test_security_context(rendered: dict[str, Rendered], profile: str) -> None:
    for name, spec in all_pod_specs(rendered[profile]):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            # A read-only root needs a writable /tmp (Python, boto3, the JVM).
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp, f"{name}: no writable /tmp"
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[tmp[0]["name"]], name


def test_callrec_pods_run_as_the_image_user(rendered: dict[str, Rendered]) -> None:
    dockerfile = (CHART.parents[1] / "Dockerfile").read_text()
    for deployment in rendered["default"].of_kind("Deployment"):
        uid = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        assert f"USER {uid}:" in dockerfile or f"USER {uid}\n" in dockerfile


def test_pod_disruption_budgets(rendered: dict[str, Rendered], profile: str) -> None:
    manifests = rendered[profile]
    pdbs = {p["metadata"]["name"]: p for p in manifests.of_kind("PodDisruptionBudget")}
    assert len(pdbs) == len(COMPONENTS)
    for deployment in manifests.of_kind("Deployment"):
        pdb = pdbs[deployment["metadata"]["name"]]
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        # maxUnavailable (not minAvailable: 1) so a single replica never blocks a drain.
        assert pdb["spec"]["maxUnavailable"] == 1


# -- ingest: drain, ingress, autoscaling ------------------------------------------------


def test_ingest_drain_settings(rendered: dict[str, Rendered], profile: str) -> None:
    manifests = rendered[profile]
    deployment = manifests.deployments()["ingest"]
    spec = deployment["spec"]["template"]["spec"]
    # What the process reads (ConfigMap and env together), not only what values say.
    grace = float(env_of(manifests, deployment)["CALLREC_INGEST_DRAIN_GRACE_S"])
    pre_stop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:2] == ["/bin/sh", "-c"] and pre_stop[2].startswith("sleep ")
    sleep = int(pre_stop[2].split()[1])
    values = load_yaml(CHART / "values.yaml")["ingest"]["drain"]
    if profile == "production":
        values = load_yaml(PRODUCTION_VALUES)["ingest"]["drain"]
    assert grace == values["graceSeconds"]
    assert sleep == values["preStopSleepSeconds"] > 0
    # The kubelet's clock runs from the preStop hook: it must outlast sleep + drain,
    # with room for close records and the producer flush.
    expected = sleep + math.ceil(grace) + values["shutdownMarginSeconds"]
    assert spec["terminationGracePeriodSeconds"] == expected
    assert spec["terminationGracePeriodSeconds"] >= sleep + grace + 10


def test_drain_grace_follows_values(helm: str) -> None:
    manifests = render(helm, set_json={"ingest.drain.graceSeconds": "120.5"})
    deployment = manifests.deployments()["ingest"]
    assert config_map_data(manifests, deployment)["CALLREC_INGEST_DRAIN_GRACE_S"] == "120.5"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 121 + 15


def test_shutdown_margins_have_a_floor(helm: str) -> None:
    """After the grace period ingest still writes close records and flushes its producer;
    the analyzer commits. A margin under 5 s would have the kubelet kill them doing it."""
    manifests = render(helm, set_values={"ingest.drain.shutdownMarginSeconds": "5"})
    spec = manifests.deployments()["ingest"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 5 + 30 + 5
    for key in ("ingest.drain.shutdownMarginSeconds", "analyzer.shutdown.marginSeconds"):
        leaf = key.rsplit(".", 1)[1]
        with pytest.raises(RenderError, match=rf"{leaf}': minimum: got 4, want 5"):
            render(helm, set_values={key: "4"})


def test_ingress_for_websockets(helm: str, rendered: dict[str, Rendered]) -> None:
    assert rendered["default"].of_kind("Ingress") == []
    (ingress,) = [i for i in rendered["production"].of_kind("Ingress")
                  if i["metadata"]["name"] == f"{RELEASE}-ingest"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/v1/stream"
    service = rendered["production"].get("Service", path["backend"]["service"]["name"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert path["backend"]["service"]["port"]["name"] in port_names
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "ingest"
    assert ingress["spec"]["tls"][0]["secretName"] == "callrec-tls"


def test_ingest_hpa_on_cpu(helm: str, rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    (hpa,) = manifests.of_kind("HorizontalPodAutoscaler")
    deployment = manifests.deployments()["ingest"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert "cpu" in container(deployment)["resources"]["requests"]
    static = render(
        helm, set_values={"ingest.autoscaling.enabled": "false", "ingest.replicaCount": "4"}
    )
    assert static.of_kind("HorizontalPodAutoscaler") == []
    assert static.deployments()["ingest"]["spec"]["replicas"] == 4


# -- recorder, analyzer, topics -----------------------------------------------------------


def test_recorder_replicas_bounded_by_partitions(helm: str) -> None:
    ok = render(helm, set_values={"recorder.replicaCount": "12"})
    assert ok.deployments()["recorder"]["spec"]["replicas"] == 12
    with pytest.raises(RenderError, match=r"recorder\.replicaCount \(13\) > .*partitions \(12\)"):
        render(helm, set_values={"recorder.replicaCount": "13"})
    with pytest.raises(RenderError, match=r"analyzer\.replicaCount"):
        render(helm, set_values={"analyzer.replicaCount": "13"})


def test_recorder_spill_volume(rendered: dict[str, Rendered], profile: str) -> None:
    manifests = rendered[profile]
    deployment = manifests.deployments()["recorder"]
    spill_dir = config_map_data(manifests, deployment)["CALLREC_RECORDER_SPILL_DIR"]
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == spill_dir]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    volume = volumes[mount["name"]]
    if profile == "production":
        claim = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert claim["resources"]["requests"]["storage"] == "50Gi"
    else:
        assert volume["emptyDir"]["sizeLimit"]


def test_analyzer_resources_and_gpu(rendered: dict[str, Rendered]) -> None:
    default = container(rendered["default"].deployments()["analyzer"])
    assert "nvidia.com/gpu" not in default["resources"].get("limits", {})
    deployment = rendered["production"].deployments()["analyzer"]
    pod = deployment["spec"]["template"]["spec"]
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_analyzer_can_be_disabled(helm: str) -> None:
    manifests = render(helm, set_values={"analyzer.enabled": "false"})
    assert set(manifests.deployments()) == {"ingest", "recorder", "control", "console"}
    assert all("analyzer" not in d["metadata"]["name"] for d in manifests.docs)
    manifests = render(helm, set_values={"console.enabled": "false"})
    assert set(manifests.deployments()) == {"ingest", "recorder", "analyzer", "control"}
    assert all("console" not in d["metadata"]["name"] for d in manifests.docs)


def topic_job_script(manifests: Rendered) -> str:
    (job,) = manifests.of_kind("Job")
    return str(container(job)["args"][0])


def test_topic_job(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    (job,) = manifests.of_kind("Job")
    annotations = job["metadata"]["annotations"]
    # Before the Deployments: ingest is not ready until its topic exists.
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = container(job)
    assert c["image"].startswith("apache/kafka:")
    script = topic_job_script(manifests)
    seven_days_ms = 7 * 24 * 3600 * 1000
    assert (
        f'ensure "callrec.media" 12 "cleanup.policy=delete,min.insync.replicas=2,'
        f'retention.ms={seven_days_ms}"'
    ) in script
    assert 'ensure "callrec.recordings" 12' in script
    assert "--if-not-exists" in script
    assert "--alter --partitions" not in script, "partition counts are never changed"


def test_topic_job_with_sasl_reads_the_password_from_a_secret(
    rendered: dict[str, Rendered],
) -> None:
    (job,) = rendered["production"].of_kind("Job")
    env = {v["name"]: v for v in container(job)["env"]}
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "callrec-kafka"
    script = topic_job_script(rendered["production"])
    assert "ScramLoginModule" in script and "$KAFKA_SASL_PASSWORD" in script
    assert "ssl.truststore.location=/etc/callrec/kafka-ca/ca.crt" in script
    assert 'ensure "callrec.media" 24' in script and "segment.bytes=268435456" in script


def test_retention_must_cover_longest_call_and_recovery(helm: str) -> None:
    with pytest.raises(RenderError, match="retentionHours"):
        render(helm, set_values={"kafka.topics.media.retentionHours": "48"})
    with pytest.raises(RenderError, match="retentionHours"):
        render(helm, set_values={"kafka.topics.maxCallHours": "100"})
    render(helm, set_values={"kafka.topics.media.retentionHours": "76"})  # 4 + 72


@pytest.mark.parametrize("topic", ["media", "recordings"])
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("retention.ms", "3600000", r"retention\.ms is set by the chart \(from .*retentionHours"),
        ("retention.bytes", "1073741824", r"retention\.bytes: size-based retention deletes"),
        ("min.insync.replicas", "1", r"min\.insync\.replicas is set by the chart"),
        ("cleanup.policy", "compact", r"cleanup\.policy is set by the chart"),
    ],
)
def test_topic_config_cannot_bypass_the_retention_checks(
    helm: str, topic: str, key: str, value: str, message: str
) -> None:
    escaped = key.replace(".", "\\.")
    with pytest.raises(RenderError, match=rf"kafka\.topics\.{topic}\.config\.{message}"):
        render(helm, set_values={f"kafka.topics.{topic}.config.{escaped}": value})


def test_min_insync_replicas_within_replication_factor(helm: str) -> None:
    with pytest.raises(RenderError, match=r"minInsyncReplicas \(4\) > .*replicationFactor \(3\)"):
        render(helm, set_values={"kafka.topics.minInsyncReplicas": "4"})
    script = topic_job_script(render(helm, set_values={"kafka.topics.minInsyncReplicas": "3"}))
    assert "min.insync.replicas=3" in script


def test_hpa_min_within_max(helm: str) -> None:
    with pytest.raises(RenderError, match=r"minReplicas \(11\) > .*maxReplicas \(10\)"):
        render(helm, set_values={"ingest.autoscaling.minReplicas": "11"})
    (hpa,) = render(
        helm, set_values={"ingest.autoscaling.minReplicas": "10"}
    ).of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == hpa["spec"]["maxReplicas"] == 10


def test_sasl_without_existing_secret_is_refused_for_the_topic_job(helm: str) -> None:
    with pytest.raises(RenderError, match="existingSecret"):
        render(helm, set_values={"kafka.sasl.mechanism": "PLAIN", "kafka.sasl.password": "x"})
    manifests = render(
        helm,
        set_values={
            "kafka.sasl.mechanism": "PLAIN",
            "kafka.sasl.password": "x",
            "kafka.topics.create": "false",
        },
    )
    assert manifests.of_kind("Job") == []
    (secret,) = manifests.of_kind("Secret")
    assert set(secret["data"]) == {"kafka-sasl-password"}


# -- optional objects ----------------------------------------------------------------------


def test_monitoring_objects(rendered: dict[str, Rendered]) -> None:
    assert not [d for d in rendered["default"].docs if d["kind"] in CRD_KINDS]
    manifests = rendered["production"]
    monitors = manifests.of_kind("ServiceMonitor")
    assert len(monitors) == len(COMPONENTS)
    services = manifests.of_kind("Service")
    scraped = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        scraped.add(service["metadata"]["labels"]["app.kubernetes.io/component"])
    assert scraped == set(COMPONENTS)

    (rule,) = manifests.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load_yaml(OBSERVABILITY / "prometheus-rules.yaml")["groups"]

    dashboard = manifests.get("ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["callrec.json"]) == json.loads(
        (OBSERVABILITY / "grafana-dashboard.json").read_text()
    )


def test_network_policies(rendered: dict[str, Rendered]) -> None:
    assert rendered["default"].of_kind("NetworkPolicy") == []
    manifests = rendered["production"]
    policies = {p["metadata"]["name"]: p for p in manifests.of_kind("NetworkPolicy")}
    values = load_yaml(PRODUCTION_VALUES)["networkPolicy"]
    for component, deployment in manifests.deployments().items():
        policy = policies[deployment["metadata"]["name"]]
        assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
        port_names = {p["name"] for p in container(deployment)["ports"]}
        allowed = []
        for rule in policy["spec"]["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= port_names
            assert rule["from"], "production restricts who may connect"
            allowed += rule["from"]
        # Prometheus may scrape every pod; only the ingress controller may stream (ingest)
        # or post Wavix's call events (control).
        assert all(peer in allowed for peer in values["metricsFrom"]), component
        streams = all(peer in allowed for peer in values["ingestFrom"])
        assert streams == (component in ("ingest", "control")), component
        browses = all(peer in allowed for peer in values["consoleFrom"])
        assert browses == (component == "console"), component


def test_component_images(helm: str, rendered: dict[str, Rendered]) -> None:
    def images(manifests: Rendered) -> dict[str, str]:
        return {c: container(d)["image"] for c, d in manifests.deployments().items()}

    assert set(images(rendered["default"]).values()) == {"callrec:0.1.0"}
    # GPU analyzers run the CUDA variant of the image (Dockerfile: WITH_CUDA=true).
    assert images(rendered["production"])["analyzer"] == (
        "registry.example.com/telephony/callrec-analyzer-cuda:0.1.0"
    )
    # Consumers first: a new tag for recorder only keeps ingest on the old one.
    staged = images(render(helm, set_values={"recorder.image.tag": "0.2.0"}))
    assert staged == {
        "ingest": "callrec:0.1.0",
        "recorder": "callrec:0.2.0",
        "analyzer": "callrec:0.1.0",
        "control": "callrec:0.1.0",
        "console": "callrec:0.1.0",
    }


def test_console_deployment_service_and_ingress(helm: str, rendered: dict[str, Rendered]
                                                ) -> None:
    manifests = rendered["production"]
    values = load_yaml(PRODUCTION_VALUES)["console"]
    deployment = manifests.deployments()["console"]
    env = env_of(manifests, deployment)
    assert "CALLREC_KAFKA_BOOTSTRAP" not in env, "the console reads the archive, not Kafka"
    assert env["CALLREC_CONSOLE_USERS_FILE"] == "/etc/callrec/console/users"
    assert env["CALLREC_CONSOLE_TRUSTED_PROXIES"] == values["config"][
        "CALLREC_CONSOLE_TRUSTED_PROXIES"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["console-users"]["secret"]["secretName"] == values["auth"]["existingSecret"]
    service = manifests.get("Service", f"{RELEASE}-console")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    (ingress,) = [i for i in manifests.of_kind("Ingress")
                  if i["metadata"]["name"] == f"{RELEASE}-console"]
    assert ingress["spec"]["tls"][0]["hosts"] == ["callrec-console.example.com"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-console", "port": {"name": "http"}}
    # Inline users and session key (tests only) go to the chart's Secret, not a ConfigMap.
    inline = render(helm, set_values={"console.auth.sessionSecret": "s" * 40},
                    set_json={"console.auth.users": json.dumps(["ann:viewer:$argon2id$x"])})
    secret = inline.get("Secret", f"{RELEASE}-secrets")
    assert base64.b64decode(secret["data"]["console-users"]) == b"ann:viewer:$argon2id$x\n"
    # Without users nobody can log in but through a trusted proxy: no users file is named.
    bare = env_of(rendered["default"], rendered["default"].deployments()["console"])
    assert "CALLREC_CONSOLE_USERS_FILE" not in bare
    assert "CALLREC_CONSOLE_EXPORT_SIGNING_KEY_FILE" not in bare  # no export button


def test_console_tmp_fits_an_export(rendered: dict[str, Rendered]) -> None:
    """An evidence export is staged in the console's /tmp: about the call's WAV."""
    def tmp_limit(component: str) -> str:
        spec = rendered["default"].deployments()[component]["spec"]["template"]["spec"]
        (tmp,) = [v for v in spec["volumes"] if v["name"] == "tmp"]
        return str(tmp["emptyDir"]["sizeLimit"])

    values = load_yaml(CHART / "values.yaml")
    assert tmp_limit("console") == values["console"]["tmpSizeLimit"] == "3Gi"
    assert tmp_limit("ingest") == values["tmpSizeLimit"]


def test_console_export_key_is_a_mounted_secret_file(helm: str) -> None:
    manifests = render(helm, set_values={"console.export.existingSecret": "evidence-key"})
    deployment = manifests.deployments()["console"]
    env = env_of(manifests, deployment)
    assert env["CALLREC_CONSOLE_EXPORT_SIGNING_KEY_FILE"] == "/etc/callrec/export/signing.key"
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["export-signing-key"]["secret"] == {
        "secretName": "evidence-key",
        "defaultMode": 0o440,
        "items": [{"key": "export-signing-key", "path": "signing.key"}],
    }
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    assert mounts["export-signing-key"] == {
        "name": "export-signing-key", "mountPath": "/etc/callrec/export", "readOnly": True
    }


def test_analyzer_shutdown_and_startup(rendered: dict[str, Rendered], profile: str) -> None:
    manifests = rendered[profile]
    deployment = manifests.deployments()["analyzer"]
    grace = float(config_map_data(manifests, deployment)["CALLREC_ANALYZER_SHUTDOWN_GRACE_S"])
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > grace
    # The model loads before the probe server listens: liveness waits for startup.
    startup = container(deployment)["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300
    device = config_map_data(manifests, deployment).get("CALLREC_ANALYZER_DEVICE", "cpu")
    assert device == ("cuda" if profile == "production" else "cpu")


def render_notes(helm: str, tmp_path: Path, values_files: tuple[Path, ...]) -> str:
    """NOTES.txt as `helm install` prints it: `helm template` skips NOTES.txt and
    `helm install --dry-run` takes no --kube-version, so render it as a template of a
    copy of the chart."""
    chart = tmp_path / "callrec"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes.yaml").write_text(
        'notes: |\n{{- include "test.notes" . | nindent 2 }}\n'
    )
    cmd = [helm, "template", RELEASE, str(chart), "--kube-version", tools.KUBE_VERSION]
    cmd += ["--show-only", "templates/notes.yaml", "--namespace", "calls"]
    for path in values_files:
        cmd += ["--values", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["notes"])


def test_notes(helm: str, tmp_path: Path) -> None:
    default = render_notes(helm, tmp_path / "default", ())
    assert f"ws://{RELEASE}-ingest.calls.svc:80/v1/stream" in default
    assert "WARNING: no ingest token" in default
    assert "WITH_MODEL=true" in default
    assert "WITH_CUDA" not in default, "a CPU analyzer needs no CUDA image"
    production = render_notes(helm, tmp_path / "production", (PRODUCTION_VALUES,))
    assert "wss://callrec.example.com/v1/stream" in production
    assert "WARNING" not in production and "WITH_MODEL" not in production
    assert "WITH_CUDA" not in production, "production names a CUDA image for its GPUs"
    assert "(terminationGracePeriodSeconds 630)" in production
    assert "port-forward svc/callrec-console 8081:8081" in default
    assert "NOTE: no console users" in default
    assert "https://callrec-console.example.com/" in production
    assert "no console users" not in production


def test_notes_warn_when_gpu_analyzers_run_the_main_image(helm: str, tmp_path: Path) -> None:
    gpu_values = tmp_path / "gpu.yaml"
    gpu_values.write_text(yaml.safe_dump({"analyzer": {"gpu": {"enabled": True}}}))
    notes = render_notes(helm, tmp_path / "gpu", (gpu_values,))
    assert "analyzer runs the main image (callrec:0.1.0)" in notes
    assert "--build-arg WITH_CUDA=true" in notes


def test_control_plane_objects(helm: str) -> None:
    """The control Deployment takes its secrets from one Secret, ingest the token keys
    from the same; its Ingress routes the webhook and the API; the topic job creates the
    call events topic and the compacted state topic."""
    manifests = render(helm, set_values={
        "control.auth.existingSecret": "callrec-control",
        "control.ingress.enabled": "true",
    })
    control = manifests.deployments()["control"]
    env = env_of(manifests, control)
    for name in ("CALLREC_CONTROL_WEBHOOK_SECRET", "CALLREC_CONTROL_API_TOKEN",
                 "CALLREC_WAVIX_API_KEY", "CALLREC_STREAM_TOKEN_KEYS"):
        assert env[name]["secretKeyRef"]["name"] == "callrec-control", name
    assert container(control)["args"] == ["control"]
    ingest_env = env_of(manifests, manifests.deployments()["ingest"])
    assert ingest_env["CALLREC_STREAM_TOKEN_KEYS"]["secretKeyRef"] == {
        "name": "callrec-control", "key": "stream-token-keys"}
    assert "CALLREC_WAVIX_API_KEY" not in ingest_env
    ingress = manifests.get("Ingress", control["metadata"]["name"])
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/v1/wavix/events", "/v1/calls"]
    script = topic_job_script(manifests)
    assert 'ensure "callrec.calls" 12' in script
    assert 'ensure "callrec.control" 12 "cleanup.policy=compact,min.insync.replicas=2"' in script


def test_control_can_be_disabled(helm: str) -> None:
    manifests = render(helm, set_values={"control.enabled": "false"})
    assert "control" not in manifests.deployments()
    assert all("-control" not in d["metadata"]["name"] for d in manifests.docs)
    assert "callrec.calls" not in topic_job_script(manifests)


def test_inline_control_secrets_go_to_the_charts_secret(helm: str) -> None:
    manifests = render(helm, set_values={"control.auth.webhookSecret": "w" * 40,
                                         "control.auth.wavixApiKey": "key"})
    (secret,) = manifests.of_kind("Secret")
    assert set(secret["data"]) == {"control-webhook-secret", "wavix-api-key"}
    env = env_of(manifests, manifests.deployments()["control"])
    assert set(n for n in env if "secretKeyRef" in str(env[n])) == {
        "CALLREC_CONTROL_WEBHOOK_SECRET", "CALLREC_WAVIX_API_KEY"}
