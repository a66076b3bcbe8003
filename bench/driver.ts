// The connection driver alone, without sockets: requests pushed through a memory transport, one
// at a time, into `serve()` with a fetch handler, and the time per request printed. It isolates
// what wireserve itself costs per request (parsing, `Request`, the handler's `Response`, reading
// its body, serializing) from the runtime's socket I/O, and is the loop to profile:
//
//   deno run -A bench/driver.ts [N] [fast] [log|json|compress|echo|static]
//   bun bench/driver.ts [N] [fast] [log|json|compress|echo|static]
//   node bench/driver.ts [N] [fast] [log|json|compress|echo|static]
//
// `echo` sends a POST with a 16 KiB Content-Length body in the same chunk as its head, which the
// handler reads whole (`arrayBuffer()`) and sends back, to price a request body.
// `static` sends `GET /4k.bin`, answered by `serveDir` (default options: the shared file cache)
// from a temporary directory holding a 4 KiB file, to price a small file served from memory (the
// benchmark's static-4k without the sockets); `fast` changes nothing there.
// `log` turns the access log on (Combined format) and `json` (JSON lines), both into a sink that
// keeps only the byte count, so what is measured is the driver's part of logging: gathering the
// entry, formatting it, batching. `compress` wraps the handler in compress() with a 10 KiB JSON
// body asked for with Accept-Encoding: gzip, br (so brotli, at its default quality), to price a compressed
// response; compare with `compress-off`, the same body sent as it is.
//   node --cpu-prof bench/driver.ts        (and deno run --cpu-prof, bun --cpu-prof)

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  compress,
  type ConnectionEvents,
  FastResponse,
  type Handler,
  serve,
  serveDir,
  type TransportConnection,
} from "../mod.ts";

const G = globalThis as unknown as {
  Deno?: { args: string[] };
  process?: { argv: string[] };
};
const args = G.Deno !== undefined ? G.Deno.args : G.process!.argv.slice(2);
const count = Number(args[0] ?? 200_000);
// `fast` as the second argument: the handler returns a FastResponse instead of a Response.
const ResponseClass = args[1] === "fast" ? FastResponse : Response;
const mode = args[2] ?? "";
const ECHO_BODY_BYTES = 16 * 1024;
const request = new TextEncoder().encode(
  mode === "echo"
    ? "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n" +
      `Content-Type: application/octet-stream\r\nContent-Length: ${ECHO_BODY_BYTES}\r\n\r\n` +
      "x".repeat(ECHO_BODY_BYTES)
    : `GET ${
      mode === "static" ? "/4k.bin" : "/"
    } HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n` +
      (mode.startsWith("compress") ? "Accept-Encoding: gzip, br\r\n" : "") + "\r\n",
);
/** About 10 KiB of JSON, as an API answers. */
const JSON_BODY = JSON.stringify(
  Array.from(
    { length: 145 },
    (_, id) => ({ id, name: `user ${id}`, email: `user${id}@example.com`, active: id % 3 === 0 }),
  ),
);
let logBytes = 0;
/** The static root, made only for `static`, removed at the end. */
const staticRoot = mode === "static" ? mkdtempSync(join(tmpdir(), "wireserve-driver-")) : "";
if (staticRoot !== "") writeFileSync(join(staticRoot, "4k.bin"), new Uint8Array(4096).fill(120));

let events: ConnectionEvents | undefined;
let wake: () => void = () => {};
let bytesOut = 0;
const connection: TransportConnection = {
  remoteAddr: { hostname: "127.0.0.1", port: 40000, transport: "tcp" },
  localAddr: { hostname: "127.0.0.1", port: 8080, transport: "tcp" },
  secure: false,
  write(bytes) {
    bytesOut += bytes.length;
    wake();
    return true;
  },
  pause() {},
  resume() {},
  end() {},
  destroy() {},
};
const server = serve({
  port: 0,
  transport: (_options, accept) => {
    events = accept(connection);
    return { addr: { hostname: "127.0.0.1", port: 8080, transport: "tcp" }, close() {} };
  },
  maxRequestsPerConnection: Number.MAX_SAFE_INTEGER,
  accessLog: mode === "log" || mode === "json"
    ? {
      format: mode === "log" ? "combined" : "json",
      write: (text) => void (logBytes += text.length),
    }
    : false,
}, handlerFor(mode));

function handlerFor(mode: string): Handler {
  const json = () =>
    new ResponseClass(JSON_BODY, { headers: { "content-type": "application/json" } });
  if (mode === "compress") return compress(json);
  if (mode === "compress-off") return json;
  if (mode === "echo") return async (request) => new ResponseClass(await request.arrayBuffer());
  if (mode === "static") return (request) => serveDir(request, { root: staticRoot });
  return () => new ResponseClass("Hello, World!");
}
await server.ready;

async function run(n: number): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const written = new Promise<void>((resolve) => wake = resolve);
    events!.onData(request.slice());
    await written;
  }
  return performance.now() - started;
}

await run(Math.min(count, 20_000)); // warm-up
const elapsed = await run(count);
console.log(
  `${(elapsed * 1000 / count).toFixed(2)} µs per request (${count} requests, ${bytesOut} bytes out${
    logBytes > 0 ? `, ${logBytes} bytes of log` : ""
  })`,
);
events!.onClose();
await server.shutdown();
if (staticRoot !== "") rmSync(staticRoot, { recursive: true });
