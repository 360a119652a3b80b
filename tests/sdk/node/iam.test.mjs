// The official Node.js SDK (2.8.0) signing in with serviceAccountJson, as its README says: it
// signs a PS256 JWT for https://iam.api.cloud.yandex.net/iam/v1/tokens and dials
// iam.api.cloud.yandex.net:443 itself. That name is pointed at our --auth iam server inside
// this test process only: grpc-js honours grpc_proxy, and the HTTP CONNECT proxy here tunnels
// that one name to CG_IAM_GRPC (every other target as asked). The server's certificate carries
// the name, and GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (set by run.sh) makes grpc-js trust it.
// Needs CG_IAM_GRPC, CG_IAM_NODE_KEY (a key from `iam create-key`), CG_IAM_NODE_FOLDER, CG_TLS_CERT.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { Session, cloudApi, waitForOperation, decodeMessage } from '@yandex-cloud/nodejs-sdk';

const {
  compute: { image_service: svc, image: imageMsg },
} = cloudApi;

const iamTarget = process.env.CG_IAM_GRPC;
const [iamHost, iamPort] = [iamTarget.split(':')[0], Number(iamTarget.split(':').pop())];
const endpoint = `localhost:${iamPort}`;
const keyFile = JSON.parse(readFileSync(process.env.CG_IAM_NODE_KEY, 'utf8'));
const folderId = process.env.CG_IAM_NODE_FOLDER;
let proxy;
const tunnelled = [];
// Every socket of every tunnel, closed at the end: the SDK's channels keep theirs open, and an
// open socket keeps this test file's process alive.
const sockets = new Set();
const track = (socket) => {
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
  return socket;
};

before(async () => {
  proxy = http.createServer();
  proxy.on('connect', (req, client, head) => {
    track(client);
    const [host, port] = req.url.split(':');
    tunnelled.push(host);
    const [toHost, toPort] = host === 'iam.api.cloud.yandex.net' ? [iamHost, iamPort] : [host, Number(port)];
    const upstream = track(net.connect(toPort, toHost, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    }));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  process.env.grpc_proxy = `http://127.0.0.1:${proxy.address().port}`;
});

after(() => {
  for (const socket of sockets) socket.destroy();
  proxy?.close();
});

test('serviceAccountJson signs in through the real IAM name, and the roles apply', async () => {
  const session = new Session({
    serviceAccountJson: {
      serviceAccountId: keyFile.service_account_id,
      accessKeyId: keyFile.id,
      privateKey: keyFile.private_key,
    },
    ssl: { rootCerts: readFileSync(process.env.CG_TLS_CERT) },
  });
  const images = session.client(svc.ImageServiceClient, endpoint);
  const created = await images.create(svc.CreateImageRequest.fromPartial({
    folderId,
    name: 'node-signed-in',
    diskId: 'fhmdisk',
  }));
  assert.equal(created.createdBy, keyFile.service_account_id);
  const done = await waitForOperation(created, session, 10_000, endpoint);
  const image = decodeMessage(done.response);
  assert.equal(image.status, imageMsg.Image_Status.READY);
  assert.ok(tunnelled.includes('iam.api.cloud.yandex.net'), `the SDK dialled the IAM name: ${tunnelled}`);

  await assert.rejects(
    images.list(svc.ListImagesRequest.fromPartial({ folderId: 'b1gnorolehere' })),
    (err) => err.code === 7 && /compute\.images\.list/.test(err.details),
  );
});
