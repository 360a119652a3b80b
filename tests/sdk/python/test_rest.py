"""The REST API reference of every ImageService method and of operations, with `requests`:
paths, camelCase query parameters, bodies, response shapes (`@type` on Any, int64 as strings,
`Z` timestamps), error bodies and statuses."""
import re
import time

import requests

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z$")


def wait(rest, op):
    deadline = time.monotonic() + 10
    while not op["done"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
        op = requests.get(f"{rest}/operations/{op['id']}", timeout=5).json()
    return op


def create(rest, folder, name, **body):
    body = {"folderId": folder, "name": name, "diskId": "fhm1", **body}
    r = requests.post(f"{rest}/compute/v1/images", json=body, timeout=5)
    assert r.status_code == 200, r.text
    op = r.json()
    assert op["metadata"]["@type"] == "type.googleapis.com/yandex.cloud.compute.v1.CreateImageMetadata"
    return wait(rest, op)["response"]


def test_image_lifecycle(rest, folder):
    img = create(rest, folder, "rest-image", family="rest-family", minDiskSize="8589934592", labels={"env": "test"})
    assert img["@type"] == "type.googleapis.com/yandex.cloud.compute.v1.Image"
    assert img["minDiskSize"] == "8589934592" and isinstance(img["size"], str) and isinstance(img["storageSize"], str)
    assert TS.match(img["createdAt"]), img["createdAt"]
    assert img["status"] == "READY" and img["os"] == {"type": "LINUX"}

    r = requests.get(f"{rest}/compute/v1/images/{img['id']}", timeout=5)
    assert r.status_code == 200 and r.json()["name"] == "rest-image" and "@type" not in r.json()

    r = requests.patch(f"{rest}/compute/v1/images/{img['id']}", timeout=5,
                       json={"updateMask": "name,minDiskSize", "name": "renamed", "minDiskSize": "10737418240"})
    op = r.json()
    assert r.status_code == 200 and op["done"] is True, r.text
    assert TS.match(op["createdAt"]) and TS.match(op["modifiedAt"])
    assert op["metadata"] == {"@type": "type.googleapis.com/yandex.cloud.compute.v1.UpdateImageMetadata", "imageId": img["id"]}
    assert op["response"]["name"] == "renamed" and op["response"]["minDiskSize"] == "10737418240"
    assert "error" not in op

    r = requests.get(f"{rest}/compute/v1/images", params={"folderId": folder, "pageSize": 1, "orderBy": "createdAt desc",
                                                          "filter": 'family="rest-family"'}, timeout=5)
    assert r.status_code == 200 and [i["id"] for i in r.json()["images"]] == [img["id"]]
    r = requests.get(f"{rest}/compute/v1/images:latestByFamily", params={"folderId": folder, "family": "rest-family"}, timeout=5)
    assert r.json()["id"] == img["id"]
    r = requests.get(f"{rest}/compute/v1/images/{img['id']}/operations", params={"pageSize": 10}, timeout=5)
    assert [o["description"] for o in r.json()["operations"]] == ["Update image", "Create image"]

    binding = {"roleId": "viewer", "subject": {"id": "u1", "type": "userAccount"}}
    r = requests.post(f"{rest}/compute/v1/images/{img['id']}:setAccessBindings", json={"accessBindings": [binding]}, timeout=5)
    assert r.json()["response"]["effectiveDeltas"] == [{"action": "ADD", "accessBinding": binding}]
    r = requests.post(f"{rest}/compute/v1/images/{img['id']}:updateAccessBindings",
                      json={"accessBindingDeltas": [{"action": "REMOVE", "accessBinding": binding}]}, timeout=5)
    assert r.json()["response"]["@type"] == "type.googleapis.com/yandex.cloud.access.AccessBindingsOperationResult"
    r = requests.get(f"{rest}/compute/v1/images/{img['id']}:listAccessBindings", timeout=5)
    assert r.json() == {"accessBindings": [], "nextPageToken": ""}

    r = requests.delete(f"{rest}/compute/v1/images/{img['id']}", timeout=5)
    assert r.json()["response"] == {"@type": "type.googleapis.com/google.protobuf.Empty"}
    r = requests.get(f"{rest}/compute/v1/images/{img['id']}", timeout=5)
    assert r.status_code == 404 and r.json()["code"] == 5


def test_cancel_over_get_and_post(rest, folder):
    for method in ("GET", "POST"):
        op = requests.post(f"{rest}/compute/v1/images", json={"folderId": folder, "name": f"c-{method.lower()}", "uri": "https://s/x"}, timeout=5).json()
        r = requests.request(method, f"{rest}/operations/{op['id']}:cancel", timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["done"] is True and r.json()["error"]["code"] == 1


def test_error_bodies_and_statuses(rest, folder):
    r = requests.patch(f"{rest}/compute/v1/images/fd8nothere", json={"name": 5}, timeout=5)
    assert r.status_code == 400 and r.json()["code"] == 3 and "name" in r.json()["message"]
    r = requests.post(f"{rest}/compute/v1/images", json={"folderId": folder, "name": "Bad"}, timeout=5)
    body = r.json()
    assert r.status_code == 400 and body["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    r = requests.put(f"{rest}/compute/v1/images/x", timeout=5)
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and r.json()["code"] == 12
    r = requests.get(f"{rest}/compute/v9/nothing", timeout=5)
    assert r.status_code == 404 and r.json()["code"] == 5
    r = requests.get(f"{rest}/compute/v1/images", params={"folderId": folder, "colour": "red"}, timeout=5)
    assert r.status_code == 400 and "colour" in r.json()["message"]
    r = requests.get(f"{rest}/operations/epdnothere", timeout=5)
    assert r.status_code == 404
    assert r.headers["x-request-id"]
