"""deploy/compose: valid against the Compose Specification, wired to the real settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from callrec.configdoc import SERVICES
from tests.deploy.conftest import COMPOSE_DIR, OBSERVABILITY, ROOT, settings_env_names

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set in the environment."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def callrec_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from this repository's Dockerfile, by name."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def test_valid_against_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_catches_mistakes(compose: dict[str, Any]) -> None:
    """The vendored schema is strict enough to be worth running."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["ingest"]["enviroment"] = {"X": "1"}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_has_the_whole_pipeline(
    compose: dict[str, Any], callrec_services: dict[str, dict[str, Any]]
) -> None:
    assert {"kafka", "kafka-init", "minio", "minio-init", "prometheus"} <= set(compose["services"])
    assert set(callrec_services) == {"ingest", "recorder", "analyzer"}
    for name, svc in callrec_services.items():
        assert svc["command"] == [name]
        build = svc["build"]
        dockerfile = COMPOSE_DIR / build["context"] / build["dockerfile"]
        assert dockerfile.resolve() == ROOT / "Dockerfile"
        assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
    assert callrec_services["analyzer"]["build"]["args"]["WITH_MODEL"] == "true"


@pytest.mark.parametrize("service", ["ingest", "recorder", "analyzer"])
def test_env_names_are_settings_fields(
    callrec_services: dict[str, dict[str, Any]],
    service: str,
    clean_callrec_env: pytest.MonkeyPatch,
) -> None:
    env = {k: interpolate(str(v)) for k, v in callrec_services[service]["environment"].items()}
    unknown = set(env) - settings_env_names(service)
    assert not unknown, f"{service}: not settings: {sorted(unknown)}"
    for name, value in env.items():
        clean_callrec_env.setenv(name, value)
    settings = SERVICES[service]()  # the values parse
    port = getattr(settings, f"{service}_port")
    published = {p.split(":")[-1] for p in callrec_services[service]["ports"]}
    assert str(port) in published


def test_services_start_after_their_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for name in ("ingest", "recorder", "analyzer"):
        condition = services[name]["depends_on"]["kafka-init"]["condition"]
        assert condition == "service_completed_successfully"
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_topics_and_bucket_are_created(
    compose: dict[str, Any], callrec_services: dict[str, dict[str, Any]]
) -> None:
    services = compose["services"]
    kafka_init = " ".join(services["kafka-init"]["command"])
    env = callrec_services["recorder"]["environment"]
    for topic in (env["CALLREC_KAFKA_MEDIA_TOPIC"], env["CALLREC_KAFKA_RECORDINGS_TOPIC"]):
        assert topic in kafka_init
    assert "retention.ms=604800000" in kafka_init
    minio_init = " ".join(services["minio-init"]["command"])
    bucket = env["CALLREC_ARCHIVE_URI"].removeprefix("s3://").split("/")[0]
    assert f"mc mb --ignore-existing --with-lock local/{bucket}" in minio_init
    assert env["CALLREC_S3_OBJECT_LOCK_MODE"] in {"GOVERNANCE", "COMPLIANCE"}
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_prometheus_scrapes_every_service_and_loads_the_rules(
    compose: dict[str, Any], callrec_services: dict[str, dict[str, Any]]
) -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    for name, svc in callrec_services.items():
        port = svc["environment"][f"CALLREC_{name.upper()}_PORT"]
        assert f"{name}:{port}" in targets
    mounts = {
        m.split(":")[1]: m.split(":")[0]
        for m in compose["services"]["prometheus"]["volumes"]
        if m.startswith(".")
    }
    assert (COMPOSE_DIR / mounts["/etc/prometheus/rules/callrec.yaml"]).resolve() == (
        OBSERVABILITY / "prometheus-rules.yaml"
    )
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), source
            else:
                assert source in compose["volumes"], f"named volume {source} not declared"
