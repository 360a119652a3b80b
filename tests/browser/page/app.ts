// The page's side of the browser suite: the calls a web app on another origin makes to the
// gateway, each returning plain data (strings, numbers) for the test to check. The API's base
// URL comes from the page's fragment: #api=http://127.0.0.1:PORT.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { ImageService } from "../gen/yandex/cloud/compute/v1/image_service_pb.js";

const api = new URLSearchParams(location.hash.slice(1)).get("api") ?? "";
// A header no simple request may carry: every call below is preflighted.
const headers = { Authorization: "Bearer t1.browser" };

type Outcome = { ok: true; value: unknown } | { ok: false; error: string };

async function attempt(f: () => Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, value: await f() };
  } catch (e) {
    return { ok: false, error: String(e) };
  }
}

/** GET /compute/v1/images with fetch: the status, the exposed request id, the listed ids. */
function rest(folderId: string): Promise<Outcome> {
  return attempt(async () => {
    const reply = await fetch(`${api}/compute/v1/images?folderId=${encodeURIComponent(folderId)}`, { headers });
    const body = await reply.json();
    return {
      status: reply.status,
      requestId: reply.headers.get("x-request-id"),
      ids: (body.images ?? []).map((i: { id: string }) => i.id),
    };
  });
}

function transport(protocol: string) {
  switch (protocol) {
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl: api });
    case "connect-json":
      return createConnectTransport({ baseUrl: api });
    case "connect-proto":
      return createConnectTransport({ baseUrl: api, useBinaryFormat: true });
  }
  throw new Error(`unknown protocol ${protocol}`);
}

/** ImageService.List, then Get of the first image, then Get of a missing one, over `protocol`. */
function rpc(protocol: string, folderId: string): Promise<Outcome> {
  return attempt(async () => {
    const client = createClient(ImageService, transport(protocol));
    const page = await client.list({ folderId, pageSize: 10n }, { headers });
    const image = await client.get({ imageId: page.images[0].id }, { headers });
    let missing = { code: "", message: "" };
    try {
      await client.get({ imageId: "fd8nosuchimage" }, { headers });
    } catch (e) {
      const err = ConnectError.from(e);
      missing = { code: Code[err.code], message: err.rawMessage };
    }
    return {
      ids: page.images.map((i) => i.id),
      image: {
        id: image.id,
        name: image.name,
        folderId: image.folderId,
        minDiskSize: String(image.minDiskSize),
        createdAt: image.createdAt ? String(image.createdAt.seconds) : "",
        labels: image.labels,
      },
      missing,
    };
  });
}

Object.assign(window, { checks: { rest, rpc } });
document.body.dataset.ready = "true";
