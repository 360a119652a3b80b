"""The SDK's documented high-level path: yandexcloud.SDK with endpoint discovery over TLS, the
bearer token, and its create-and-wait operation helper."""
import os

import yandexcloud
from yandex.cloud.compute.v1 import image_pb2, image_service_pb2 as isvc, image_service_pb2_grpc as isvc_grpc

from conftest import env


def test_create_operation_and_get_result_over_tls(folder):
    cert = open(env("CG_TLS_CERT"), "rb").read()
    sdk = yandexcloud.SDK(iam_token="t1.python-sdk", endpoint=env("CG_TLS_GRPC"), root_certificates=cert)
    result = sdk.create_operation_and_get_result(
        isvc.CreateImageRequest(folder_id=folder, name="via-sdk", snapshot_id="fd8snap"),
        service=isvc_grpc.ImageServiceStub,
        method_name="Create",
        response_type=image_pb2.Image,
        meta_type=isvc.CreateImageMetadata,
        timeout=30,
    )
    assert result.response.status == image_pb2.Image.READY
    assert result.response.id == result.meta.image_id
    assert result.response.name == "via-sdk"
    # The operation was created by the token's subject, not anonymously.
    images = sdk.client(isvc_grpc.ImageServiceStub)
    ops = images.ListOperations(isvc.ListImageOperationsRequest(image_id=result.response.id))
    assert ops.operations[0].created_by.startswith("aje")
