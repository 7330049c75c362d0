// A client in JavaScript (Node 18+) that knows the API only through its OpenAPI document:
// operations are looked up by operationId. Run: API=http://127.0.0.1:8000 TOKEN=... node openapi_client.mjs
const base = process.env.API, token = process.env.TOKEN;
const spec = await (await fetch(`${base}/openapi.json`)).json();
const ops = {};
for (const [path, methods] of Object.entries(spec.paths))
  for (const [method, op] of Object.entries(methods)) ops[op.operationId] = { path, method };
async function call(id, params = {}, body, query = {}) {
  const { path, method } = ops[id];
  const url = new URL(base + path.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(params[k])));
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const r = await fetch(url, { method: method.toUpperCase(), headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, type: r.headers.get("content-type"), body: text ? JSON.parse(text) : null };
}
const q = "node-" + Date.now();
const made = await call("enqueue", { queue: q }, { task: "add", args: [1, 2] });
console.log("enqueue", made.status, made.body.id);
const waited = await call("wait_result", { queue: q, job_id: made.body.id }, undefined, { timeout: 0.5 });
console.log("wait", waited.status, waited.body);
const cancelled = await call("cancel", { queue: q, job_id: made.body.id }, { reason: "from node" });
console.log("cancel", cancelled.status, cancelled.body);
await call("enqueue_bulk", { queue: q }, { jobs: Array.from({ length: 25 }, (_, i) => ({ task: "add", args: [i, i] })) });
let cursor, pages = 0, seen = 0;
do {
  const page = await call("list_jobs", { queue: q }, undefined, cursor ? { state: "waiting", limit: 10, cursor } : { state: "waiting", limit: 10 });
  pages++; seen += page.body.jobs.length; cursor = page.body.next_cursor;
} while (cursor);
console.log("paged", pages, "pages", seen, "jobs");
const bad = await call("get_job", { queue: q, job_id: "nope" });
console.log("missing", bad.status, bad.type, bad.body.detail);
