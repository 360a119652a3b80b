"""Creates, updates and reads an image through the official Python SDK's own stubs (PyPI
`yandexcloud`), against a running compute-gateway backend over plaintext gRPC.

    pip install -r tests/sdk/requirements.txt
    cargo run --release &          # gRPC on 127.0.0.1:50051
    python tests/sdk/image_roundtrip.py [127.0.0.1:50051]

Exits non-zero on the first mismatch.
"""
import sys
import time
import uuid

import grpc
from google.protobuf import field_mask_pb2
from yandex.cloud.compute.v1 import image_pb2, image_service_pb2 as isvc
from yandex.cloud.compute.v1.image_service_pb2_grpc import ImageServiceStub
from yandex.cloud.operation import operation_service_pb2 as osvc
from yandex.cloud.operation.operation_service_pb2_grpc import OperationServiceStub


def wait(ops, op):
    deadline = time.monotonic() + 10
    while not op.done:
        assert time.monotonic() < deadline, f"operation {op.id} not done in 10 s"
        time.sleep(0.05)
        op = ops.Get(osvc.GetOperationRequest(operation_id=op.id), timeout=5)
    return op


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    channel = grpc.insecure_channel(target)
    images, ops = ImageServiceStub(channel), OperationServiceStub(channel)
    folder = "b1g" + uuid.uuid4().hex[:12]

    op = images.Create(isvc.CreateImageRequest(
        folder_id=folder, name="sdk-image", family="sdk-family", labels={"env": "test"},
        min_disk_size=4 * 1024**3, snapshot_id="fd8snapshot", os=image_pb2.Os(type=image_pb2.Os.WINDOWS)), timeout=5)
    meta = isvc.CreateImageMetadata()
    assert op.metadata.Unpack(meta), op.metadata.type_url
    done = wait(ops, op)
    img = image_pb2.Image()
    assert done.WhichOneof("result") == "response" and done.response.Unpack(img)
    assert img.id == meta.image_id and img.status == image_pb2.Image.READY, img
    assert img.os.type == image_pb2.Os.WINDOWS and img.min_disk_size == 4 * 1024**3
    print("created", img.id, image_pb2.Image.Status.Name(img.status))

    op = images.Update(isvc.UpdateImageRequest(
        image_id=img.id, update_mask=field_mask_pb2.FieldMask(paths=["name", "labels"]),
        name="sdk-renamed", description="not masked", labels={"team": "sdk"}), timeout=5)
    assert op.done and op.WhichOneof("result") == "response"
    updated = image_pb2.Image()
    assert op.response.Unpack(updated)
    assert (updated.name, updated.description, dict(updated.labels)) == ("sdk-renamed", "", {"team": "sdk"}), updated
    print("updated", updated.name, dict(updated.labels))

    got = images.Get(isvc.GetImageRequest(image_id=img.id), timeout=5)
    assert got == updated, (got, updated)
    latest = images.GetLatestByFamily(isvc.GetImageLatestByFamilyRequest(folder_id=folder, family="sdk-family"), timeout=5)
    assert latest.id == img.id
    listed = images.List(isvc.ListImagesRequest(folder_id=folder), timeout=5)
    assert [i.id for i in listed.images] == [img.id]

    try:
        images.Update(isvc.UpdateImageRequest(image_id=img.id, update_mask=field_mask_pb2.FieldMask(paths=["family"])), timeout=5)
        raise AssertionError("a non-updatable mask path was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        print("rejected mask path family:", e.details())
    print("OK: the official SDK's stubs created, updated and read an image")


if __name__ == "__main__":
    main()
