"""Every ImageService and OperationService RPC through the official SDK's generated stubs over
plaintext gRPC, with the API's semantics."""
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from yandex.cloud.access import access_pb2
from yandex.cloud.compute.v1 import image_pb2, image_service_pb2 as isvc
from yandex.cloud.operation import operation_service_pb2 as osvc

from conftest import wait_done

GiB = 1024**3


def create(images, operations, folder, name, **kw):
    kw.setdefault("disk_id", "fhmdisk")
    op = images.Create(isvc.CreateImageRequest(folder_id=folder, name=name, **kw), timeout=5)
    done = wait_done(operations, op)
    img = image_pb2.Image()
    assert done.response.Unpack(img)
    return img


def update(images, **kw):
    op = images.Update(isvc.UpdateImageRequest(**kw), timeout=5)
    assert op.done and op.WhichOneof("result") == "response"
    meta = isvc.UpdateImageMetadata()
    assert op.metadata.Unpack(meta) and meta.image_id == kw["image_id"]
    img = image_pb2.Image()
    assert op.response.Unpack(img)
    return img


def mask(*paths):
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_create_is_asynchronous_and_get_reads_it(images, operations, folder):
    op = images.Create(isvc.CreateImageRequest(folder_id=folder, name="a", snapshot_id="snap", min_disk_size=8 * GiB,
                                               os=image_pb2.Os(type=image_pb2.Os.WINDOWS), pooled=True), timeout=5)
    assert not op.done and op.description == "Create image"
    meta = isvc.CreateImageMetadata()
    assert op.metadata.Unpack(meta)
    assert images.Get(isvc.GetImageRequest(image_id=meta.image_id), timeout=5).status == image_pb2.Image.CREATING
    done = wait_done(operations, op)
    img = image_pb2.Image()
    assert done.response.Unpack(img)
    assert (img.id, img.status, img.os.type, img.pooled, img.min_disk_size) == (meta.image_id, image_pb2.Image.READY, image_pb2.Os.WINDOWS, True, 8 * GiB)
    assert images.Get(isvc.GetImageRequest(image_id=img.id), timeout=5) == img


def test_update_cases_of_the_reference_page(images, operations, folder):
    img = create(images, operations, folder, "seed", description="d0", min_disk_size=8 * GiB, labels={"a": "1", "b": "2"})
    got = update(images, image_id=img.id, update_mask=mask("name"), name="renamed", description="ignored")
    assert (got.name, got.description, got.min_disk_size) == ("renamed", "d0", 8 * GiB)
    got = update(images, image_id=img.id, update_mask=mask("description", "min_disk_size"))
    assert (got.description, got.min_disk_size, dict(got.labels)) == ("", 0, {"a": "1", "b": "2"})
    got = update(images, image_id=img.id, update_mask=mask("labels"), labels={"c": "3"})
    assert dict(got.labels) == {"c": "3"}
    got = update(images, image_id=img.id, description="all")
    assert (got.name, got.description, got.min_disk_size, dict(got.labels)) == ("", "all", 0, {})
    for path in ["family", "folder_id", "id", "nope"]:
        with pytest.raises(grpc.RpcError) as e:
            update(images, image_id=img.id, update_mask=mask(path))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and path in e.value.details()


def test_list_pagination_filter_order_and_latest_by_family(images, operations, folder):
    made = [create(images, operations, folder, f"img-{i}", family="even" if i % 2 == 0 else "odd") for i in range(5)]
    seen, token = [], ""
    while True:
        page = images.List(isvc.ListImagesRequest(folder_id=folder, page_size=2, page_token=token), timeout=5)
        seen += [i.id for i in page.images]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(i.id for i in made)
    newest = images.List(isvc.ListImagesRequest(folder_id=folder, order_by="createdAt desc", page_size=1), timeout=5)
    assert newest.images[0].name == "img-4"
    odd = images.List(isvc.ListImagesRequest(folder_id=folder, filter='family = "odd"'), timeout=5)
    assert sorted(i.name for i in odd.images) == ["img-1", "img-3"]
    latest = images.GetLatestByFamily(isvc.GetImageLatestByFamilyRequest(folder_id=folder, family="even"), timeout=5)
    assert latest.name == "img-4"
    with pytest.raises(grpc.RpcError) as e:
        images.GetLatestByFamily(isvc.GetImageLatestByFamilyRequest(folder_id=folder, family="none"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_and_list_operations(images, operations, folder):
    img = create(images, operations, folder, "gone")
    update(images, image_id=img.id, update_mask=mask("description"), description="x")
    ops = images.ListOperations(isvc.ListImageOperationsRequest(image_id=img.id), timeout=5)
    assert [o.description for o in ops.operations] == ["Update image", "Create image"]
    op = images.Delete(isvc.DeleteImageRequest(image_id=img.id), timeout=5)
    assert op.done and op.response.type_url == "type.googleapis.com/google.protobuf.Empty"
    with pytest.raises(grpc.RpcError) as e:
        images.Get(isvc.GetImageRequest(image_id=img.id), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert operations.Get(osvc.GetOperationRequest(operation_id=op.id), timeout=5) == op


def test_cancel_a_running_create(images, operations, folder):
    op = images.Create(isvc.CreateImageRequest(folder_id=folder, name="slow", uri="https://storage.example/x.qcow2"), timeout=5)
    cancelled = operations.Cancel(osvc.CancelOperationRequest(operation_id=op.id), timeout=5)
    assert cancelled.done and cancelled.WhichOneof("result") == "error"
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    meta = isvc.CreateImageMetadata()
    assert op.metadata.Unpack(meta)
    with pytest.raises(grpc.RpcError) as e:
        images.Get(isvc.GetImageRequest(image_id=meta.image_id), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_of_a_done_operation_is_failed_precondition(images, operations, folder):
    img = create(images, operations, folder, "done")
    op = images.Update(isvc.UpdateImageRequest(image_id=img.id, update_mask=mask("description")), timeout=5)
    with pytest.raises(grpc.RpcError) as e:
        operations.Cancel(osvc.CancelOperationRequest(operation_id=op.id), timeout=5)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def binding(role, user):
    return access_pb2.AccessBinding(role_id=role, subject=access_pb2.Subject(id=user, type="userAccount"))


def test_access_bindings(images, operations, folder):
    img = create(images, operations, folder, "shared")
    op = images.SetAccessBindings(access_pb2.SetAccessBindingsRequest(resource_id=img.id, access_bindings=[binding("viewer", "u1")]), timeout=5)
    result = access_pb2.AccessBindingsOperationResult()
    assert op.done and op.response.Unpack(result) and len(result.effective_deltas) == 1
    op = images.UpdateAccessBindings(access_pb2.UpdateAccessBindingsRequest(resource_id=img.id, access_binding_deltas=[
        access_pb2.AccessBindingDelta(action=access_pb2.ADD, access_binding=binding("viewer", "u1")),
        access_pb2.AccessBindingDelta(action=access_pb2.ADD, access_binding=binding("editor", "u2")),
    ]), timeout=5)
    assert op.response.Unpack(result)
    assert [(d.action, d.access_binding.role_id) for d in result.effective_deltas] == [(access_pb2.ADD, "editor")]
    listed = images.ListAccessBindings(access_pb2.ListAccessBindingsRequest(resource_id=img.id), timeout=5)
    assert sorted(b.role_id for b in listed.access_bindings) == ["editor", "viewer"]


def test_validation_errors_carry_bad_request_details(images, folder):
    with pytest.raises(grpc.RpcError) as e:
        images.Create(isvc.CreateImageRequest(folder_id=folder, name="Bad Name", min_disk_size=1), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = next(status_pb2.Status.FromString(v) for k, v in e.value.trailing_metadata() if k == "grpc-status-details-bin")
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert sorted(v.field for v in bad.field_violations) == ["min_disk_size", "name", "source"]
    with pytest.raises(grpc.RpcError) as e:
        images.List(isvc.ListImagesRequest(folder_id=folder, page_size=1001), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in e.value.details()


def test_idempotency_key(images, operations, folder):
    img = create(images, operations, folder, "idem")
    req = isvc.UpdateImageRequest(image_id=img.id, update_mask=mask("description"), description="once")
    first = images.Update(req, metadata=[("idempotency-key", f"{folder}-k")], timeout=5)
    again = images.Update(req, metadata=[("idempotency-key", f"{folder}-k")], timeout=5)
    assert first == again
