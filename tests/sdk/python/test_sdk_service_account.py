"""Signing in as the SDK recommends: yandexcloud.SDK(service_account_key=...) with a key made by
`compute-gateway iam create-key`, against a TLS server running --auth iam. The SDK finds the IAM
endpoint by discovery, signs a PS256 JWT with the key, exchanges it for an IAM token and sends
that on every call; the roles of the config file decide what the account may do."""
import json

import grpc
import pytest
import yandexcloud
from yandex.cloud.compute.v1 import image_pb2, image_service_pb2 as isvc, image_service_pb2_grpc as isvc_grpc

from conftest import env


def sdk_with(**credentials):
    cert = open(env("CG_TLS_CERT"), "rb").read()
    return yandexcloud.SDK(endpoint=env("CG_IAM_GRPC"), root_certificates=cert, **credentials)


def test_a_service_account_key_signs_in_and_its_roles_apply():
    key = json.load(open(env("CG_IAM_KEY")))
    sdk = sdk_with(service_account_key=key)
    folder = env("CG_IAM_FOLDER")
    result = sdk.create_operation_and_get_result(
        isvc.CreateImageRequest(folder_id=folder, name="signed-in", disk_id="fhmdisk"),
        service=isvc_grpc.ImageServiceStub,
        method_name="Create",
        response_type=image_pb2.Image,
        meta_type=isvc.CreateImageMetadata,
        timeout=30,
    )
    assert result.response.status == image_pb2.Image.READY
    images = sdk.client(isvc_grpc.ImageServiceStub)
    ops = images.ListOperations(isvc.ListImageOperationsRequest(image_id=result.response.id))
    assert ops.operations[-1].created_by == key["service_account_id"]
    listed = images.List(isvc.ListImagesRequest(folder_id=folder))
    assert [i.id for i in listed.images] == [result.response.id]

    # A folder where the account has no role.
    with pytest.raises(grpc.RpcError) as refused:
        images.List(isvc.ListImagesRequest(folder_id="b1gnorolehere"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "compute.images.list" in refused.value.details()


def test_a_token_this_server_did_not_issue_is_refused():
    images = sdk_with(iam_token="t1.not-issued-here").client(isvc_grpc.ImageServiceStub)
    with pytest.raises(grpc.RpcError) as refused:
        images.List(isvc.ListImagesRequest(folder_id=env("CG_IAM_FOLDER")))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
