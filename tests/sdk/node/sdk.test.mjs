// The official Node.js SDK (@yandex-cloud/nodejs-sdk 2.8.0) against compute-gateway's TLS gRPC
// listener: create, get, list, update with a mask, delete, and an operation poll.
// Needs CG_TLS_GRPC (host:port of the TLS listener) and CG_TLS_CERT (its self-signed PEM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Session, cloudApi, waitForOperation, decodeMessage } from '@yandex-cloud/nodejs-sdk';

const {
  compute: { image_service: svc, image: imageMsg },
  operation: { operation_service: opSvc },
} = cloudApi;

const port = process.env.CG_TLS_GRPC.split(':').pop();
const endpoint = `localhost:${port}`;
const session = new Session({ iamToken: 't1.node-sdk', ssl: { rootCerts: readFileSync(process.env.CG_TLS_CERT) } });
const images = session.client(svc.ImageServiceClient, endpoint);
const operations = session.client(opSvc.OperationServiceClient, endpoint);
const folderId = `b1gnode${Date.now().toString(36)}`;

test('create, get, list, update with a mask, delete', async () => {
  const created = await images.create(svc.CreateImageRequest.fromPartial({
    folderId,
    name: 'node-image',
    family: 'node-family',
    labels: { env: 'test' },
    minDiskSize: 4194304,
    diskId: 'fhmdisk',
  }));
  assert.equal(created.description, 'Create image');
  const meta = decodeMessage(created.metadata);
  assert.ok(meta.imageId.startsWith('fd8'));

  // The SDK's own poller, against our OperationService.
  const done = await waitForOperation(created, session, 10_000, endpoint);
  assert.equal(done.done, true);
  const image = decodeMessage(done.response);
  assert.equal(image.id, meta.imageId);
  assert.equal(image.status, imageMsg.Image_Status.READY);

  const got = await images.get(svc.GetImageRequest.fromPartial({ imageId: image.id }));
  assert.equal(got.name, 'node-image');
  assert.deepEqual(got.labels, { env: 'test' });

  const listed = await images.list(svc.ListImagesRequest.fromPartial({ folderId, pageSize: 10 }));
  assert.deepEqual(listed.images.map((i) => i.id), [image.id]);

  const updated = await images.update(svc.UpdateImageRequest.fromPartial({
    imageId: image.id,
    updateMask: { paths: ['name', 'labels'] },
    name: 'node-renamed',
    description: 'not in the mask',
    labels: { team: 'node' },
  }));
  assert.equal(updated.done, true);
  const after = decodeMessage(updated.response);
  assert.equal(after.name, 'node-renamed');
  assert.equal(after.description, '');
  assert.deepEqual(after.labels, { team: 'node' });

  const polled = await operations.get({ operationId: updated.id });
  assert.equal(polled.id, updated.id);
  assert.equal(polled.done, true);

  const deleted = await images.delete(svc.DeleteImageRequest.fromPartial({ imageId: image.id }));
  assert.equal(deleted.done, true);
  await assert.rejects(images.get(svc.GetImageRequest.fromPartial({ imageId: image.id })), /not found/);
});

test('validation errors reach the SDK as INVALID_ARGUMENT', async () => {
  await assert.rejects(
    images.create(svc.CreateImageRequest.fromPartial({ folderId, name: 'Bad Name', diskId: 'd' })),
    (err) => err.code === 3 && /name/.test(err.details),
  );
});
