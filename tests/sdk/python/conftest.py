"""Fixtures for the official-client suites. tests/sdk/run.sh starts the servers and passes:
CG_GRPC / CG_HTTP (plaintext listeners), CG_TLS_GRPC / CG_TLS_HTTP (TLS listeners) and
CG_TLS_CERT (the self-signed certificate they serve)."""
import os
import time
import uuid

import grpc
import pytest
from yandex.cloud.compute.v1.image_service_pb2_grpc import ImageServiceStub
from yandex.cloud.operation import operation_service_pb2 as osvc
from yandex.cloud.operation.operation_service_pb2_grpc import OperationServiceStub


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run tests/sdk/run.sh")
    return value


@pytest.fixture(scope="session")
def channel():
    ch = grpc.insecure_channel(env("CG_GRPC"))
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def images(channel):
    return ImageServiceStub(channel)


@pytest.fixture(scope="session")
def operations(channel):
    return OperationServiceStub(channel)


@pytest.fixture(scope="session")
def rest():
    return "http://" + env("CG_HTTP")


@pytest.fixture
def folder():
    return "b1g" + uuid.uuid4().hex[:16]


def wait_done(operations, op, timeout=10):
    deadline = time.monotonic() + timeout
    while not op.done:
        assert time.monotonic() < deadline, f"operation {op.id} not done in {timeout} s"
        time.sleep(0.02)
        op = operations.Get(osvc.GetOperationRequest(operation_id=op.id), timeout=5)
    return op
