#!/usr/bin/env bash
# The browser suite: headless Chromium against the release binary (tests/browser/browser.test.mjs
# says what it checks). Installs what it needs: Debian's chromium when it is missing (as root),
# the pinned npm packages, the TypeScript generated from proto/ by buf and protoc-gen-es, and the
# page's bundle (esbuild).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --release --locked --quiet
cd tests/browser
npm ci --no-audit --no-fund --loglevel=error
rm -rf gen dist
npx buf generate
npx esbuild page/app.ts --bundle --format=esm --target=es2022 --log-level=warning --outfile=dist/app.js
CHROMIUM=$(command -v chromium) node --test --test-force-exit --test-timeout=120000
