// The /docs page: reads the gateway's own openapi.json, lists every route by service, and sends
// a request from a form. No framework and nothing from a CDN: the page works offline.
"use strict";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

// The schema a $ref points at, followed through allOf, for the body help text.
function resolve(doc, schema) {
  if (!schema) return {};
  if (schema.$ref) return resolve(doc, doc.components.schemas[schema.$ref.split("/").pop()]);
  if (schema.allOf) {
    const merged = { properties: {} };
    for (const part of schema.allOf) Object.assign(merged.properties, resolve(doc, part).properties || {});
    return merged;
  }
  return schema;
}

function typeName(doc, schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return typeName(doc, schema.items) + "[]";
  if (schema.allOf) return schema.allOf.map((s) => typeName(doc, s)).filter(Boolean).join(" & ");
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "";
}

function bodyHelp(doc, content) {
  const schema = resolve(doc, content && content["application/json"] && content["application/json"].schema);
  const names = Object.entries(schema.properties || {}).map(([n, s]) => `${n}: ${typeName(doc, s)}`);
  return names.length ? "Fields: " + names.join(", ") : "";
}

// The URL of a request: path parameters substituted (each one encoded as a whole segment),
// the non-empty query parameters appended.
function requestUrl(path, inputs) {
  const query = new URLSearchParams();
  let url = path;
  for (const { param, input } of inputs) {
    const value = input.value;
    if (param.in === "path") url = url.replace(`{${param.name}}`, encodeURIComponent(value));
    else if (value !== "") query.append(param.name, value);
  }
  const q = query.toString();
  return q ? `${url}?${q}` : url;
}

function shellQuote(s) {
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

async function send(method, path, inputs, bodyInput, out) {
  const url = requestUrl(path, inputs);
  const headers = {};
  const auth = document.getElementById("authorization").value.trim();
  if (auth) headers.Authorization = auth;
  const init = { method: method.toUpperCase(), headers };
  if (bodyInput && bodyInput.value.trim()) {
    headers["Content-Type"] = "application/json";
    init.body = bodyInput.value;
  }
  let curl = `curl -X ${init.method} ${shellQuote(new URL(url, location.href).href)}`;
  for (const [k, v] of Object.entries(headers)) curl += ` -H ${shellQuote(`${k}: ${v}`)}`;
  if (init.body) curl += ` -d ${shellQuote(init.body)}`;
  out.curl.textContent = curl;
  out.status.textContent = "…";
  out.status.className = "status";
  try {
    const reply = await fetch(url, init);
    const text = await reply.text();
    out.status.textContent = `${reply.status} ${reply.statusText}`;
    out.status.className = "status " + (reply.ok ? "ok" : "error");
    const shown = [];
    for (const [k, v] of reply.headers) {
      if (k === "content-type" || k === "x-request-id" || k.startsWith("grpc-")) shown.push(`${k}: ${v}`);
    }
    out.headers.textContent = shown.join("\n");
    try {
      out.reply.textContent = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      out.reply.textContent = text;
    }
  } catch (e) {
    out.status.textContent = "failed";
    out.status.className = "status error";
    out.reply.textContent = String(e);
  }
}

function operationView(doc, path, method, op) {
  const inputs = [];
  const params = el("div", { class: "params" });
  for (const param of op.parameters || []) {
    const input = el("input", {
      name: param.name,
      placeholder: typeName(doc, param.schema) + (param.required ? " (required)" : ""),
      title: param.description || "",
    });
    input.setAttribute("data-param", param.name);
    inputs.push({ param, input });
    params.append(el("label", {}, el("code", {}, param.name), ` ${param.in}`), input);
  }
  let bodyInput = null;
  const body = el("div", { class: "body" }, el("p", { class: "help" }, op.description || ""));
  if (inputs.length) body.append(params);
  if (op.requestBody) {
    bodyInput = el("textarea", { name: "body", value: "{}", spellcheck: false });
    body.append(el("label", {}, "Body (JSON)"), bodyInput, el("p", { class: "help" }, bodyHelp(doc, op.requestBody.content)));
  }
  const out = {
    status: el("span", { class: "status" }),
    curl: el("pre", { class: "curl" }),
    headers: el("pre", { class: "headers" }),
    reply: el("pre", { class: "reply" }),
  };
  const button = el("button", { class: "send", type: "button" }, "Send");
  button.addEventListener("click", () => send(method, path, inputs, bodyInput, out));
  body.append(el("div", {}, button, out.status), out.curl, out.headers, out.reply);
  const view = el(
    "details",
    { "data-operation": op.operationId },
    el("summary", {}, el("span", { class: `verb ${method}` }, method.toUpperCase()), el("span", { class: "path" }, path), el("span", { class: "summary" }, op.summary || "")),
    body,
  );
  view.dataset.search = `${method} ${path} ${op.operationId} ${op.summary || ""}`.toLowerCase();
  return view;
}

async function main() {
  const main = document.getElementById("operations");
  const auth = document.getElementById("authorization");
  auth.value = sessionStorage.getItem("authorization") || "";
  auth.addEventListener("input", () => sessionStorage.setItem("authorization", auth.value));
  let doc;
  try {
    const reply = await fetch("openapi.json");
    if (!reply.ok) throw new Error(`openapi.json: ${reply.status}`);
    doc = await reply.json();
  } catch (e) {
    main.replaceChildren(el("p", { class: "status error" }, String(e)));
    return;
  }
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  document.title = doc.info.title;
  document.getElementById("about").textContent = doc.info.description || "";
  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(doc, path, method, op));
    }
  }
  const sections = [];
  for (const [tag, views] of byTag) {
    if (!views.length) continue;
    const about = (doc.tags || []).find((t) => t.name === tag);
    sections.push(el("section", { "data-tag": tag }, el("h2", {}, tag), el("p", { class: "help" }, (about && about.description) || ""), ...views));
  }
  main.replaceChildren(...sections);
  document.getElementById("filter").addEventListener("input", (e) => {
    const words = e.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const view of main.querySelectorAll("details")) {
      view.hidden = !words.every((w) => view.dataset.search.includes(w));
    }
  });
  document.body.dataset.ready = "true";
}

main();
