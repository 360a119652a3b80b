"""/metrics through the Prometheus project's own text-format parser, /healthz, /readyz and
/openapi.json, against the running binary."""
import requests
from prometheus_client.parser import text_string_to_metric_families


def samples(rest):
    text = requests.get(f"{rest}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(found, name, **labels):
    return sum(v for l, v in found.get(name, []) if all(l.get(k) == x for k, x in labels.items()))


def test_metrics_parse_and_count_requests(rest, folder):
    r = requests.post(f"{rest}/compute/v1/images", json={"folderId": folder, "name": "metered", "diskId": "d"}, timeout=5)
    image = r.json()["metadata"]["imageId"]
    before = value(samples(rest), "http_requests_total", route="/compute/v1/images/{image_id}", method="GET", status="200")
    for _ in range(3):
        assert requests.get(f"{rest}/compute/v1/images/{image}", timeout=5).status_code == 200
    found = samples(rest)
    assert value(found, "http_requests_total", route="/compute/v1/images/{image_id}", method="GET", status="200") == before + 3
    assert value(found, "grpc_server_requests_total", method="/yandex.cloud.compute.v1.ImageService/Get", code="Ok") >= 3
    assert value(found, "http_request_duration_seconds_count", route="/compute/v1/images/{image_id}", method="GET") >= 3
    assert value(found, "store_commit_duration_seconds_count") >= 1
    assert "http_requests_in_flight" in found


def test_health_and_openapi(rest):
    for path in ("/healthz", "/readyz"):
        r = requests.get(f"{rest}{path}", timeout=5)
        assert r.status_code == 200 and r.json() == {"status": "SERVING"}
    doc = requests.get(f"{rest}/openapi.json", timeout=5).json()
    assert doc["openapi"] == "3.1.0"
    assert "patch" in doc["paths"]["/compute/v1/images/{imageId}"]
