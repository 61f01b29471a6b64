import httpx
import pytest

from shared.topics import ALL_TOPICS
from tools.cluster import SERVICES

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_as_its_own_process_and_is_healthy(cluster, namespace, service):
    body = httpx.get(cluster.urls[service] + "/health").json()
    consumers = body.pop("consumers")
    assert body == {"service": service, "status": "ok", "kafka": True, "store": True}
    if service == "intake":  # a pure producer: no consumer group
        assert consumers == {}
    else:
        assert list(consumers) == [namespace + service]
        assert consumers[namespace + service]["state"] == "ok"
    assert cluster.processes[service].pid not in {
        p.pid for s, p in cluster.processes.items() if s != service
    }


def test_the_asyncapi_docs_of_the_five_services_cover_every_topic(cluster, namespace):
    addresses = set()
    for service in SERVICES:
        spec = httpx.get(cluster.urls[service] + "/asyncapi.json").json()
        assert spec["asyncapi"] == "3.0.0"
        addresses |= {c["address"] for c in spec["channels"].values()}
    expected = {namespace + t.name for t in ALL_TOPICS}
    assert expected - addresses == set()


def test_the_docs_pages_load_no_script_from_another_host(cluster):
    base = cluster.urls["intake"]
    for page in ("/asyncapi", "/docs", "/redoc"):
        html = httpx.get(base + page).text
        assert "http://" not in html.replace(base, "")
        assert "https://" not in html
    viewer = httpx.get(base + "/asyncapi/static/index.js")
    assert viewer.status_code == 200
    assert "AsyncApiStandalone" in viewer.text
    assert httpx.get(base + "/asyncapi/static/../../etc/passwd").status_code == 404


def test_the_openapi_spec_describes_health(cluster):
    spec = httpx.get(cluster.urls["intake"] + "/openapi.json").json()
    assert "/health" in spec["paths"]
