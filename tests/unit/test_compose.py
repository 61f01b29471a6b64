"""docker-compose.yml cannot run here (no Docker engine): check its structure so it does not rot."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose["services"]
APP_SERVICES = {
    "intake": 8001,
    "diagnostics": 8002,
    "allocation": 8003,
    "recycling": 8004,
    "custody": 8006,
}


def test_it_runs_kafka_mongo_the_five_services_and_kafka_ui():
    assert set(services) >= {"kafka", "mongo", "kafka-ui", *APP_SERVICES}


def test_kafka_is_the_official_image_at_the_version_the_local_broker_uses():
    pom = (ROOT / "infra/kafka/pom.xml").read_text()
    version = re.search(r"<kafka.version>(.+)</kafka.version>", pom).group(1)
    assert services["kafka"]["image"] == f"apache/kafka:{version}"


def test_kafka_runs_the_local_brokers_configuration_with_sasl_and_acls():
    """The same server.properties as ./dev (SCRAM, StandardAuthorizer, nothing allowed by
    default), started by the script that adds the container's listeners and credentials."""
    kafka = services["kafka"]
    assert "./infra/kafka/server.properties:/greenit/server.properties:ro" in kafka["volumes"]
    assert kafka["entrypoint"] == ["/bin/bash", "/greenit/compose-start.sh"]
    assert kafka["env_file"] == [".local/secrets/kafka.env"]
    properties = (ROOT / "infra/kafka/server.properties").read_text()
    for line in (
        "process.roles=broker,controller",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "super.users=User:broker;User:admin",
    ):
        assert line in properties.splitlines()
    script = (ROOT / "infra/kafka/compose-start.sh").read_text()
    assert "PLAINTEXT://" not in script.replace("SASL_PLAINTEXT://", ""), "no anonymous listener"
    assert "--add-scram" in script


def test_each_service_gets_only_its_own_kafka_password():
    for name in APP_SERVICES:
        assert services[name]["env_file"] == [f".local/secrets/{name}.env"]
        assert "secrets" not in services[name]
    assert services["kafka-ui"]["env_file"] == [".local/secrets/kafka-ui.env"]


def test_mongo_is_a_real_mongodb_7_or_8():
    image, tag = services["mongo"]["image"].split(":")
    assert image == "mongo"
    assert tag.split(".")[0] in {"7", "8"}


def test_kafka_ui_points_at_the_broker():
    ui = services["kafka-ui"]
    assert ui["image"].startswith("kafbat/kafka-ui:")
    assert ui["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:19092"


@pytest.mark.parametrize("name", ["kafka", "mongo", *APP_SERVICES])
def test_every_long_running_service_has_a_healthcheck(name):
    assert services[name]["healthcheck"]["test"]


@pytest.mark.parametrize(("name", "port"), APP_SERVICES.items())
def test_each_app_service_is_configured_by_environment_and_waits_for_healthy_dependencies(
    name, port
):
    service = services[name]
    env = service["environment"]
    assert env["SERVICE"] == name
    assert env["GREENIT_KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert env["GREENIT_MONGO_URL"] == "mongodb://mongo:27017/"
    assert env[f"GREENIT_{name.upper()}_HTTP_PORT"] == port
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert service["build"] == "."


def test_ports_are_published_on_loopback_only():
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), name


def test_the_dockerfile_runs_the_service_named_by_its_environment():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "python -m services.${SERVICE}" in dockerfile
    assert "shared.healthcheck" in dockerfile


def test_the_image_holds_every_package_the_project_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in declared:
        assert f"COPY {package} ./{package}" in dockerfile, package


def test_mongo_authenticates_and_each_service_gets_a_user_of_its_own():
    mongo = services["mongo"]
    assert mongo["environment"]["MONGO_INITDB_ROOT_USERNAME"] == "admin"
    assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"] == "/run/secrets/store-admin"
    job = services["topics"]
    assert "shared.store_users ensure" in " ".join(job["command"])
    store_secrets = {s for s in job["secrets"] if s.startswith("store-")}
    assert store_secrets == {f"store-{u}" for u in (*APP_SERVICES, "ops", "admin")}
    assert job["depends_on"]["mongo"]["condition"] == "service_healthy"
    for name in APP_SERVICES:  # a service's env file holds its own store password only
        assert "env_file" in services[name]
        assert "GREENIT_STORE_USERNAME" not in services[name]
