// Headless Chromium (Debian's, driven by playwright-core) against the release binary:
//   (a) a page on a second origin calls REST with fetch and an Authorization header, so the
//       browser preflights; a page on an origin not allowed is refused by the browser;
//   (b) the same page calls ImageService.List and Get over gRPC-Web and over Connect (JSON and
//       binary) with connect-web's transports and messages generated from proto/;
//   (c) /docs lists the routes, sends a Get from its form and shows the reply (screenshot in
//       target/browser/docs.png).
// Run by tests/browser/run.sh, which builds the binary, the generated code and the page. The
// server's log goes to target/browser/serve.log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = new URL('../..', import.meta.url).pathname;
const here = new URL('.', import.meta.url).pathname;
const binary = join(root, 'target/release/compute-gateway');
const folderId = `b1gweb${Date.now().toString(36)}`;
// The server's log and the screenshot.
const logs = join(root, 'target/browser');
mkdirSync(logs, { recursive: true });

let pageServer, pageOrigin, server, api, data, browser;

// Serves the page and its bundle: the second origin.
function servePage() {
  const files = {
    '/index.html': ['page/index.html', 'text/html'],
    '/app.js': ['dist/app.js', 'text/javascript'],
  };
  const srv = createServer((req, res) => {
    const file = files[new URL(req.url, 'http://x').pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': file[1] }).end(readFileSync(join(here, file[0])));
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

// Starts `serve` on free ports; resolves with its HTTP address once its ready line arrives.
function startServer(allowedOrigin) {
  data = mkdtempSync(join(tmpdir(), 'cg-browser-'));
  server = spawn(binary, [
    'serve', '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0',
    '--data-dir', data, '--ready-file', '-', '--create-delay-ms', '20',
    '--cors-allow-origin', allowedOrigin,
  ], { stdio: ['ignore', 'pipe', openSync(join(logs, 'serve.log'), 'w')] });
  return new Promise((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
    createInterface({ input: server.stdout }).once('line', (line) => resolve(JSON.parse(line).http));
  });
}

async function waitDone(op) {
  for (;;) {
    const got = await (await fetch(`${api}/operations/${op.id}`)).json();
    if (got.done) return got;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function createImage(name) {
  const reply = await fetch(`${api}/compute/v1/images`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ folderId, name, diskId: 'd', minDiskSize: '4194304', labels: { from: 'browser' } }),
  });
  assert.equal(reply.status, 200);
  const done = await waitDone(await reply.json());
  return done.response.id;
}

let ids;

before(async () => {
  pageServer = await servePage();
  const port = pageServer.address().port;
  // `localhost` and `127.0.0.1` are different origins: the page is on the first, the API on
  // the second.
  pageOrigin = `http://localhost:${port}`;
  api = `http://${await startServer(pageOrigin)}`;
  ids = [await createImage('web-one'), await createImage('web-two')];
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  pageServer?.close();
  if (data) rmSync(data, { recursive: true, force: true });
});

async function openPage(origin) {
  const page = await browser.newPage();
  await page.goto(`${origin}/index.html#api=${api}`);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

test('REST from another origin: preflighted fetch with Authorization, and a refused origin', async () => {
  const page = await openPage(pageOrigin);
  const preflights = [];
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.requestWillBeSent', (e) => {
    if (e.request.method === 'OPTIONS') preflights.push(e.request.url);
  });
  const result = await page.evaluate((f) => window.checks.rest(f), folderId);
  assert.equal(result.ok, true, result.error);
  assert.equal(result.value.status, 200);
  assert.deepEqual([...result.value.ids].sort(), [...ids].sort());
  assert.match(result.value.requestId ?? '', /\S/, 'x-request-id is exposed to the script');
  assert.ok(preflights.some((u) => u.startsWith(`${api}/compute/v1/images`)), `a preflight was sent: ${preflights}`);
  await page.close();

  // The same page from an origin the gateway does not allow: the browser refuses the reply.
  const other = await openPage(`http://127.0.0.1:${pageServer.address().port}`);
  const refused = await other.evaluate((f) => window.checks.rest(f), folderId);
  assert.equal(refused.ok, false);
  assert.match(refused.error, /TypeError/);
  await other.close();
});

for (const protocol of ['grpc-web', 'connect-json', 'connect-proto']) {
  test(`ImageService.List and Get over ${protocol} with connect-web`, async () => {
    const page = await openPage(pageOrigin);
    const result = await page.evaluate(([p, f]) => window.checks.rpc(p, f), [protocol, folderId]);
    await page.close();
    assert.equal(result.ok, true, result.error);
    const { value } = result;
    assert.deepEqual([...value.ids].sort(), [...ids].sort());
    assert.equal(value.image.id, value.ids[0]);
    assert.equal(value.image.folderId, folderId);
    assert.equal(value.image.minDiskSize, '4194304');
    assert.ok(Number(value.image.createdAt) > 1_700_000_000, value.image.createdAt);
    assert.deepEqual(value.image.labels, { from: 'browser' });
    assert.equal(value.missing.code, 'NotFound');
    assert.match(value.missing.message, /fd8nosuchimage/);
  });
}

test('/docs lists the routes and sends a request from its form', async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${api}/docs`);
  await page.waitForSelector('body[data-ready="true"]');
  const operations = await page.locator('details[data-operation]').count();
  const spec = await (await fetch(`${api}/openapi.json`)).json();
  const inSpec = Object.values(spec.paths).reduce((n, item) => n + Object.keys(item).length, 0);
  assert.equal(operations, inSpec, 'one entry per operation of openapi.json');

  const get = page.locator('details[data-operation="ImageService_Get"]');
  await get.locator('summary').click();
  await get.locator('input[data-param="imageId"]').fill(ids[0]);
  await get.locator('button.send').click();
  await get.locator('.status.ok').waitFor();
  assert.match(await get.locator('.status').innerText(), /^200/);
  const reply = JSON.parse(await get.locator('pre.reply').innerText());
  assert.equal(reply.id, ids[0]);
  assert.equal(reply.name, 'web-one');

  // An error is shown as the Status the gateway sent.
  await get.locator('input[data-param="imageId"]').fill('fd8nosuchimage');
  await get.locator('button.send').click();
  await get.locator('.status.error').waitFor();
  assert.match(await get.locator('.status').innerText(), /^404/);
  assert.equal(JSON.parse(await get.locator('pre.reply').innerText()).code, 5);
  await get.locator('input[data-param="imageId"]').fill(ids[0]);
  await get.locator('button.send').click();
  await get.locator('.status.ok').waitFor();

  await page.screenshot({ path: join(logs, 'docs.png'), fullPage: false });
  await page.close();
});
