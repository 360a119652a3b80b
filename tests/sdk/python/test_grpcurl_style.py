"""What `grpcurl -d '{...}' host:port yandex.cloud.compute.v1.ImageService/Update` does, with
grpcio-reflection and no generated stubs: list services over reflection v1 and v1alpha, fetch
the file descriptors by symbol, build the request from JSON with the fetched descriptors, call
Update and Get, decode the replies dynamically."""
import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2

from conftest import env

# reflection v1 has the same messages as v1alpha under another package; grpcio-reflection ships
# v1alpha stubs only, so v1 is called through a generic stream with the same message classes.
SERVICES = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}


def reflect(channel, version, requests):
    call = channel.stream_stream(
        SERVICES[version],
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=5))


def load_pool(channel, version, symbol):
    """Fetches the file of `symbol`, then each missing dependency by file name, as grpcurl does."""
    (resp,) = reflect(channel, version, [reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)])
    files = {}
    pending = list(resp.file_descriptor_response.file_descriptor_proto)
    while pending:
        f = descriptor_pb2.FileDescriptorProto.FromString(pending.pop())
        files.setdefault(f.name, f)
        for dep in f.dependency:
            if dep not in files:
                (more,) = reflect(channel, version, [reflection_pb2.ServerReflectionRequest(file_by_filename=dep)])
                pending.extend(more.file_descriptor_response.file_descriptor_proto)
    pool = descriptor_pool.DescriptorPool()
    added = set()
    while len(added) < len(files):
        for f in files.values():
            if f.name not in added and all(d in added for d in f.dependency):
                pool.Add(f)
                added.add(f.name)
    return pool


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_list_describe_and_call_through_reflection(version, folder):
    channel = grpc.insecure_channel(env("CG_GRPC"))
    (listing,) = reflect(channel, version, [reflection_pb2.ServerReflectionRequest(list_services="")])
    names = {s.name for s in listing.list_services_response.service}
    assert {"yandex.cloud.compute.v1.ImageService", "yandex.cloud.operation.OperationService", "grpc.health.v1.Health"} <= names

    pool = load_pool(channel, version, "yandex.cloud.compute.v1.ImageService")
    service = pool.FindServiceByName("yandex.cloud.compute.v1.ImageService")
    assert {m.name for m in service.methods} >= {"Get", "List", "Create", "Update", "Delete"}
    # The http annotations survive reflection (grpcurl describe shows them).
    update = service.methods_by_name["Update"]
    assert b"/compute/v1/images/{image_id}" in update.GetOptions().SerializeToString()

    def call(method, body):
        m = service.methods_by_name[method]
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        request = json_format.Parse(body, req_cls())
        stub = channel.unary_unary(f"/{service.full_name}/{method}", request_serializer=req_cls.SerializeToString,
                                   response_deserializer=resp_cls.FromString)
        return json_format.MessageToDict(stub(request, timeout=5), descriptor_pool=pool)

    op = call("Create", f'{{"folderId": "{folder}", "name": "via-reflection", "diskId": "d1"}}')
    image_id = op["metadata"]["imageId"]
    updated = call("Update", f'{{"imageId": "{image_id}", "updateMask": "description", "description": "from grpcurl"}}')
    assert updated["done"] is True
    assert updated["response"]["@type"] == "type.googleapis.com/yandex.cloud.compute.v1.Image"
    assert updated["response"]["description"] == "from grpcurl"
    got = call("Get", f'{{"imageId": "{image_id}"}}')
    assert got["description"] == "from grpcurl" and got["name"] == "via-reflection"
    channel.close()
