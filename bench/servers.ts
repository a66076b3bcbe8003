// The servers the benchmark compares, started on whichever runtime runs this file (Deno, Bun or
// Node 24), with the same routes and the same response shapes:
//
//   deno run --allow-net bench/servers.ts KIND [ROUTE ...] [--close] [--compress]
//       [--access-log common|combined|json] [--max-seconds N] [--echo-bytes N]
//   bun bench/servers.ts KIND [ROUTE ...]
//   node bench/servers.ts KIND [ROUTE ...]
//   deno run --allow-net --allow-read=DIR bench/servers.ts wireserve|native --static DIR
//
// KIND
//   wireserve  `serve()` from ../mod.ts with its default options (a fetch handler)
//   fast       the same server, routes and responses (byte for byte, headers included) as
//              wireserve, but its handler answers with mod.ts's `FastResponse` (`new
//              FastResponse(body, init)`; /json a string of `JSON.stringify` with the Content-Type
//              the runtime's `Response.json` gives) instead of `Response`: the driver writes its
//              string body (on Node also its bytes body; mod.ts leaves bytes to Response's stream
//              on Deno and Bun) without making and reading a body stream. /echo reads the
//              request body whole as wireserve does. One difference, on Bun only: its `Response`
//              leaves a string body's Content-Type out, so wireserve's `/` (and 404) go out
//              without one and fast's with text/plain;charset=UTF-8. Not for --static
//   native     the runtime's own server: Deno.serve, Bun.serve or node:http's createServer
//              (on Node with node-style handlers, `response.writeHead` + `response.end`)
//   adapter    Node only: node:http's createServer running the same fetch handler as wireserve
//              through the smallest correct adapter a user would write (see startAdapter): a
//              `Request` from the IncomingMessage (body as a web stream, `duplex: "half"`), the
//              handler's `Response` written with `writeHead` and its body read whole into
//              `end`. On Node a fetch-handler server pays for undici's Request and Response, so
//              this, not `native`, is the like-for-like baseline for wireserve there
//   ceiling    the runtime's raw-TCP ceiling: a server on Deno.listen, Bun.listen or node:net that
//              writes one fixed response for every complete request head it sees (it counts
//              CRLFCRLF, parses nothing): the most any JS server on raw sockets can do there
//   fetch-ceiling  the fetch-objects ceiling: the same raw-TCP server (Deno.listen, Bun.listen,
//              node:net) that also, for every complete request head, does what any fetch-handler
//              server must: it decodes the head (TextDecoder, UTF-8), splits the request line and
//              the header lines (name up to the colon, value trimmed; nothing validated), builds a
//              genuine `Request` (`http://` + Host + the target, method, those headers as the init
//              array), calls the handler (`() => new Response("Hello, World!")`, the same one as
//              wireserve's), reads only its status, and writes the ceiling's fixed response. Route
//              `/` only; a request body is not read (the benchmark's plaintext GETs have none).
//              wireserve ÷ fetch-ceiling is what the driver can still win; fetch-ceiling ÷
//              ceiling is the price of the fetch objects themselves on that runtime
//
// ROUTE (default `/`): `/` answers "Hello, World!" as text/plain;charset=UTF-8, `/json` a small JSON
// object, `/json-10k` about 10 KiB of JSON (145 users, 10,352 bytes, stringified once at start and
// sent as a string with Content-Type application/json: what is priced is sending it, not
// JSON.stringify), `/echo` the request body (read whole) as application/octet-stream. With one route the
// handler answers every request with it and looks at nothing (the plain `() => new Response(…)` of
// issue 5); with several it dispatches on the path and answers 404 otherwise. The ceiling takes one
// route only and writes that route's response; for `/echo` it writes a fixed body of --echo-bytes
// (default 16384) bytes, the size the benchmark posts. fetch-ceiling takes `/` only. With --close
// the ceilings' response carries `connection: close` and they close the connection after writing
// it, as a server must when the request says `Connection: close` (the other kinds read that header
// themselves and ignore --close).
//
// --compress (wireserve and fast only) wraps the handler in mod.ts's `compress(handler)` with its
// default options: brotli for `Accept-Encoding: gzip, br`, bodies of 512 B and more.
// --access-log FORMAT (wireserve and fast only) starts serve() with `accessLog: { format, write }`,
// `write` a sink that only adds up the text's length: what is priced is the driver's logging work
// (gathering, formatting, batching the lines), not a terminal, pipe or disk.
//
// --static DIR (instead of routes; wireserve and native only) serves the files directly in DIR,
// `GET /NAME` → DIR/NAME, as application/octet-stream with a Content-Length:
//   wireserve  `serve()` + `serveDir(request, { root: DIR })` from ../mod.ts, default options
//   native     Deno: `Deno.serve` answering `new Response(file.readable)` of `Deno.open` after
//              `file.stat()` (JSR's `@std/http/file-server` is not installable here);
//              Bun: `Bun.serve` answering `new Response(Bun.file(path))`;
//              Node: node:http, `fs.stat`, then `fs.createReadStream(path).pipe(response)`
// The native ones do nothing else (no ETag, Range or conditionals): the runtime's bare file path.
// Names other than [A-Za-z0-9_-][A-Za-z0-9._-]* are 404 there.
//
// Always on 127.0.0.1 and a port the OS picks. The port is printed as the first line of stdout.
// Exits on SIGTERM, and in any case after --max-seconds (default 900), so a lost server cannot
// outlive a benchmark by long.

import { compress, FastResponse, serve, serveDir } from "../mod.ts";

type Route = "/" | "/json" | "/json-10k" | "/echo";
type Kind = "wireserve" | "fast" | "native" | "adapter" | "ceiling" | "fetch-ceiling";

const ROUTES: readonly Route[] = ["/", "/json", "/json-10k", "/echo"];
const KINDS: readonly Kind[] = [
  "wireserve",
  "fast",
  "native",
  "adapter",
  "ceiling",
  "fetch-ceiling",
];
const HOSTNAME = "127.0.0.1";

const HELLO = "Hello, World!";
const JSON_BODY = { message: "Hello, World!" };
/** About 10 KiB of JSON, as an API answers (10,352 bytes; bench/run.mjs checks it byte for byte). */
const JSON_10K_TEXT = JSON.stringify(
  Array.from(
    { length: 145 },
    (_, id) => ({ id, name: `user ${id}`, email: `user${id}@example.com`, active: id % 3 === 0 }),
  ),
);
const TEXT_TYPE = "text/plain;charset=UTF-8";
const JSON_TYPE = "application/json";
const BYTES_TYPE = "application/octet-stream";

// ---------------------------------------------------------------------------------------------
// The runtime, typed as far as this file uses it.

interface DenoConn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
}
interface DenoFsFile {
  readonly readable: ReadableStream<Uint8Array>;
  stat(): Promise<{ isFile: boolean; size: number }>;
  close(): void;
}
interface DenoApi {
  args: string[];
  open(path: string, options: { read: true }): Promise<DenoFsFile>;
  exit(code?: number): never;
  addSignalListener(signal: "SIGTERM", handler: () => void): void;
  listen(options: { hostname: string; port: number }): AsyncIterable<DenoConn> & {
    addr: { port: number };
  };
  serve(
    options: { hostname: string; port: number; onListen(addr: { port: number }): void },
    handler: (request: Request) => Response | Promise<Response>,
  ): unknown;
}
interface BunSocket {
  data: { pending: Uint8Array | null; tail: number; ending: boolean; heads: FetchHeads | null };
  write(bytes: Uint8Array): number;
  end(): void;
  setNoDelay?(noDelay?: boolean): void;
}
interface BunApi {
  file(path: string): Blob;
  serve(options: {
    hostname: string;
    port: number;
    idleTimeout?: number;
    fetch(request: Request): Response | Promise<Response>;
    error?(error: Error): Response;
  }): { port: number };
  listen(options: {
    hostname: string;
    port: number;
    socket: {
      open(socket: BunSocket): void;
      data(socket: BunSocket, data: Uint8Array): void;
      drain(socket: BunSocket): void;
      close?(socket: BunSocket): void;
      error?(socket: BunSocket, error: Error): void;
    };
  }): { port: number };
}
interface NodeProcess {
  argv: string[];
  exit(code?: number): never;
  on(signal: "SIGTERM", handler: () => void): void;
}

const G = globalThis as unknown as { Deno?: DenoApi; Bun?: BunApi; process?: NodeProcess };
const runtime: "deno" | "bun" | "node" = G.Bun !== undefined
  ? "bun"
  : G.Deno !== undefined
  ? "deno"
  : "node";

/** Run by `exit` first: what a server reports on its way out. */
const atExit: (() => void)[] = [];

function exit(code: number): never {
  for (const hook of atExit.splice(0)) hook();
  if (runtime === "deno") return G.Deno!.exit(code);
  return G.process!.exit(code);
}

function fail(message: string): never {
  console.error(`servers.ts: ${message}`);
  return exit(2);
}

// ---------------------------------------------------------------------------------------------
// Arguments

const argv = runtime === "deno" ? G.Deno!.args : G.process!.argv.slice(2);
let kind: Kind | undefined;
const routes: Route[] = [];
let maxSeconds = 900;
let echoBytes = 16 * 1024;
let close = false;
let compressed = false;
let logFormat: "common" | "combined" | "json" | undefined;
let staticRoot: string | undefined;
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === "--close") close = true;
  else if (arg === "--compress") compressed = true;
  else if (arg === "--access-log") {
    const format = argv[++i];
    if (format !== "common" && format !== "combined" && format !== "json") {
      fail("--access-log needs common, combined or json");
    }
    logFormat = format;
  } else if (arg === "--static") {
    staticRoot = argv[++i];
    if (!staticRoot) fail("--static needs a directory");
  } else if (arg === "--max-seconds" || arg === "--echo-bytes") {
    const value = Number(argv[++i]);
    if (!Number.isInteger(value) || value < 1) fail(`${arg} needs a positive integer`);
    if (arg === "--max-seconds") maxSeconds = value;
    else echoBytes = value;
  } else if ((KINDS as readonly string[]).includes(arg) && kind === undefined) {
    kind = arg as Kind;
  } else if ((ROUTES as readonly string[]).includes(arg)) {
    if (!routes.includes(arg as Route)) routes.push(arg as Route);
  } else {
    fail(
      `unknown argument ${JSON.stringify(arg)}; usage: servers.ts ${KINDS.join("|")} [${
        ROUTES.join(" ")
      } ...] [--close] [--compress] [--access-log FORMAT] [--static DIR] [--max-seconds N] ` +
        `[--echo-bytes N]`,
    );
  }
}
if (kind === undefined) fail(`the first argument must be one of ${KINDS.join(", ")}`);
if (kind === "adapter" && runtime !== "node") {
  fail(`adapter is node:http with a fetch adapter, for Node only (this is ${runtime})`);
}
if (
  staticRoot !== undefined &&
  (routes.length > 0 || (kind !== "wireserve" && kind !== "native"))
) {
  fail("--static is for wireserve and native, without routes");
}
if ((compressed || logFormat !== undefined) && kind !== "wireserve" && kind !== "fast") {
  fail("--compress and --access-log are for wireserve and fast");
}
if (staticRoot !== undefined && (compressed || logFormat !== undefined)) {
  fail("--compress and --access-log are not for --static");
}
if (routes.length === 0) routes.push("/");
if (kind === "ceiling" && routes.length > 1) {
  fail("the ceiling writes one fixed response: one route");
}
if (kind === "fetch-ceiling" && (routes.length > 1 || routes[0] !== "/")) {
  fail("the fetch-objects ceiling answers `/` only");
}

// Bounded lifetime, and a clean exit on SIGTERM.
setTimeout(() => {
  console.error(`servers.ts: ${kind} on ${runtime} exits after its ${maxSeconds} s lifetime`);
  exit(0);
}, maxSeconds * 1000);
if (runtime === "deno") G.Deno!.addSignalListener("SIGTERM", () => exit(0));
else G.process!.on("SIGTERM", () => exit(0));

function listening(port: number): void {
  console.log(String(port));
}

// ---------------------------------------------------------------------------------------------
// Fetch handlers: wireserve, Deno.serve, Bun.serve and the Node adapter all run these; the fast
// kind runs the same ones answering with FastResponse.

type FetchHandler = (request: Request) => Response | Promise<Response>;

const FETCH_ROUTES: Record<Route, FetchHandler> = {
  "/": () => new Response(HELLO),
  "/json": () => Response.json(JSON_BODY),
  "/json-10k": () => new Response(JSON_10K_TEXT, { headers: { "content-type": JSON_TYPE } }),
  "/echo": async (request) =>
    new Response(await request.arrayBuffer(), { headers: { "content-type": BYTES_TYPE } }),
};

/**
 * The Content-Type the runtime's `Response.json` gives (Bun's adds `;charset=utf-8`), so that the
 * fast kind's JSON answer is byte for byte wireserve's on every runtime.
 */
const RESPONSE_JSON_TYPE = Response.json(null).headers.get("content-type") ?? JSON_TYPE;

/**
 * FETCH_ROUTES with FastResponse: the same status, headers and bodies, with one exception on Bun,
 * whose `Response` leaves a string body's Content-Type out of its headers (Bun.serve adds it
 * itself): there wireserve's `/` and 404 go out without one, FastResponse's with
 * text/plain;charset=UTF-8, as on Deno and Node.
 */
const FAST_ROUTES: Record<Route, FetchHandler> = {
  "/": () => new FastResponse(HELLO),
  "/json": () =>
    new FastResponse(JSON.stringify(JSON_BODY), {
      headers: { "content-type": RESPONSE_JSON_TYPE },
    }),
  "/json-10k": () => new FastResponse(JSON_10K_TEXT, { headers: { "content-type": JSON_TYPE } }),
  "/echo": async (request) =>
    new FastResponse(await request.arrayBuffer(), { headers: { "content-type": BYTES_TYPE } }),
};

function fetchHandler(fast = false): FetchHandler {
  const table = fast ? FAST_ROUTES : FETCH_ROUTES;
  const Answer = fast ? FastResponse : Response;
  if (routes.length === 1) return table[routes[0]];
  return (request) => {
    const url = request.url;
    const start = url.indexOf("/", url.indexOf("//") + 2);
    const query = url.indexOf("?", start);
    const path = start === -1 ? "/" : url.slice(start, query === -1 ? undefined : query);
    const route = table[path as Route];
    if (route !== undefined && routes.includes(path as Route)) return route(request);
    return new Answer("Not Found", { status: 404 });
  };
}

// ---------------------------------------------------------------------------------------------
// node:http, with the same responses.

type NodeRequest = import("node:http").IncomingMessage;
type NodeResponse = import("node:http").ServerResponse;
type NodeHandler = (request: NodeRequest, response: NodeResponse) => void;

const HELLO_LENGTH = String(new TextEncoder().encode(HELLO).byteLength);
const JSON_TEXT = JSON.stringify(JSON_BODY);
const JSON_LENGTH = String(new TextEncoder().encode(JSON_TEXT).byteLength);
const JSON_10K_LENGTH = String(new TextEncoder().encode(JSON_10K_TEXT).byteLength);

function concat(chunks: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const chunk of chunks) length += chunk.byteLength;
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

const NODE_ROUTES: Record<Route, NodeHandler> = {
  "/": (_request, response) => {
    response.writeHead(200, { "content-type": TEXT_TYPE, "content-length": HELLO_LENGTH });
    response.end(HELLO);
  },
  "/json": (_request, response) => {
    response.writeHead(200, { "content-type": JSON_TYPE, "content-length": JSON_LENGTH });
    response.end(JSON_TEXT);
  },
  "/json-10k": (_request, response) => {
    response.writeHead(200, { "content-type": JSON_TYPE, "content-length": JSON_10K_LENGTH });
    response.end(JSON_10K_TEXT);
  },
  "/echo": (request, response) => {
    const chunks: Uint8Array[] = [];
    request.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    request.on("end", () => {
      const body = chunks.length === 1 ? chunks[0] : concat(chunks);
      response.writeHead(200, {
        "content-type": BYTES_TYPE,
        "content-length": String(body.byteLength),
      });
      response.end(body);
    });
  },
};

function nodeHandler(): NodeHandler {
  if (routes.length === 1) return NODE_ROUTES[routes[0]];
  return (request, response) => {
    const url = request.url ?? "/";
    const query = url.indexOf("?");
    const path = query === -1 ? url : url.slice(0, query);
    const route = NODE_ROUTES[path as Route];
    if (route !== undefined && routes.includes(path as Route)) return route(request, response);
    response.writeHead(404, { "content-type": TEXT_TYPE, "content-length": "9" });
    response.end("Not Found");
  };
}

// ---------------------------------------------------------------------------------------------
// node:http with a fetch adapter: what a user who wants fetch handlers on node:http writes.

/**
 * node:http's createServer running `handler` through a minimal but correct adapter: the URL from
 * Host and the request target, every header as it came (rawHeaders keeps repeated ones), the body
 * of any method but GET and HEAD as a web stream; then the status and every response header
 * (the headers' iterator yields each set-cookie on its own, so a flat name, value list keeps them
 * apart) with a Content-Length of the body read whole. A handler that throws gets a 500.
 */
async function startAdapter(handler: FetchHandler): Promise<void> {
  const { createServer } = await import("node:http");
  const { Readable } = await import("node:stream");
  const { Buffer } = await import("node:buffer");
  const server = createServer(async (req, res) => {
    try {
      const method = req.method ?? "GET";
      const headers = new Headers();
      const raw = req.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
      const init: RequestInit & { duplex?: "half" } = { method, headers };
      if (method !== "GET" && method !== "HEAD") {
        init.body = Readable.toWeb(req) as unknown as ReadableStream<Uint8Array>;
        init.duplex = "half";
      }
      const request = new Request(`http://${req.headers.host ?? HOSTNAME}${req.url ?? "/"}`, init);
      const response = await handler(request);
      const out: string[] = [];
      for (const [name, value] of response.headers) {
        if (name !== "content-length") out.push(name, value);
      }
      if (response.body === null) {
        res.writeHead(response.status, out);
        res.end();
        return;
      }
      const body = Buffer.from(await response.arrayBuffer());
      out.push("content-length", String(body.byteLength));
      res.writeHead(response.status, out);
      res.end(body);
    } catch (error) {
      console.error(error);
      if (res.headersSent) res.destroy();
      else {
        res.writeHead(500, { "content-type": TEXT_TYPE, "content-length": "21" });
        res.end("Internal Server Error");
      }
    }
  });
  // As the native node:http server: idle keep-alive connections stay open past the 5 s default.
  server.keepAliveTimeout = 120_000;
  server.listen(0, HOSTNAME, () => {
    const address = server.address();
    listening(typeof address === "object" && address !== null ? address.port : 0);
  });
}

// ---------------------------------------------------------------------------------------------
// The raw-TCP ceiling: one fixed response per CRLFCRLF seen.

/** The ceiling's fixed response for `route`, headers shaped as the real servers send them. */
function fixedResponse(route: Route): Uint8Array {
  const body = route === "/"
    ? new TextEncoder().encode(HELLO)
    : route === "/json"
    ? new TextEncoder().encode(JSON_TEXT)
    : route === "/json-10k"
    ? new TextEncoder().encode(JSON_10K_TEXT)
    : new Uint8Array(echoBytes).fill(0x61);
  const type = route === "/"
    ? TEXT_TYPE
    : route === "/json" || route === "/json-10k"
    ? JSON_TYPE
    : BYTES_TYPE;
  const head = new TextEncoder().encode(
    `HTTP/1.1 200 OK\r\ncontent-type: ${type}\r\ncontent-length: ${body.byteLength}\r\n` +
      `date: ${new Date().toUTCString()}\r\n${close ? "connection: close\r\n" : ""}\r\n`,
  );
  const bytes = new Uint8Array(head.byteLength + body.byteLength);
  bytes.set(head, 0);
  bytes.set(body, head.byteLength);
  return bytes;
}

const CR = 0x0d;
const LF = 0x0a;

/**
 * Counts the CRLFCRLF sequences ending in `bytes`; `tail` holds the last three bytes seen before
 * (packed, most recent lowest), so a sequence split across reads still counts. Returns the count
 * and the new tail packed as `count * 2^24 + tail`.
 */
function countHeads(bytes: Uint8Array, tail: number): number {
  let count = 0;
  let at = bytes.indexOf(LF);
  while (at !== -1) {
    const b1 = at >= 1 ? bytes[at - 1] : tail & 0xff;
    if (b1 === CR) {
      const b2 = at >= 2 ? bytes[at - 2] : (tail >>> (8 * (1 - at))) & 0xff;
      const b3 = at >= 3 ? bytes[at - 3] : (tail >>> (8 * (2 - at))) & 0xff;
      if (b2 === LF && b3 === CR) count++;
    }
    at = bytes.indexOf(LF, at + 1);
  }
  const n = bytes.length;
  let next: number;
  if (n >= 3) next = bytes[n - 1] | (bytes[n - 2] << 8) | (bytes[n - 3] << 16);
  else {next =
      ((tail << (8 * n)) | (n >= 1 ? bytes[n - 1] : 0) | (n >= 2 ? bytes[n - 2] << 8 : 0)) &
      0xffffff;}
  return count * 0x1000000 + next;
}

/** `response` repeated `count` times (cached for the small counts pipelining produces). */
function repeated(response: Uint8Array, count: number, cache: Uint8Array[]): Uint8Array {
  if (count === 1) return response;
  let bytes = cache[count];
  if (bytes === undefined) {
    bytes = new Uint8Array(response.byteLength * count);
    for (let i = 0; i < count; i++) bytes.set(response, i * response.byteLength);
    if (count < 256) cache[count] = bytes;
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// The fetch-objects ceiling: the raw-TCP ceiling plus a `Request` and the handler's `Response` for
// each request head, parsed no more than it takes to build them.

/** The fetch-objects ceiling's handler: wireserve's own for `/`, synchronous. */
const FETCH_CEILING_HANDLER = FETCH_ROUTES["/"] as (request: Request) => Response;
const HEAD_DECODER = new TextDecoder();
/** A head longer than this (without its CRLFCRLF yet) closes the connection. */
const MAX_HEAD = 64 * 1024;
let fetchCeilingReported = false;

/**
 * Builds the `Request` of one request head (`head` without its final CRLFCRLF): method and target
 * from the request line, every header line as a [name, value] pair of the init array (the value
 * trimmed), the URL from Host (else the listening address) and the target. Calls the handler with
 * it and reads the status of its answer; throws on a line it cannot split or an answer not 200.
 */
function fetchObjects(head: string, fallbackHost: string): void {
  let lineEnd = head.indexOf("\r\n");
  if (lineEnd === -1) lineEnd = head.length;
  const sp1 = head.indexOf(" ");
  const sp2 = head.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 === -1 || sp2 > lineEnd) throw new Error("bad request line");
  const headers: [string, string][] = [];
  let host = fallbackHost;
  for (let at = lineEnd + 2; at < head.length;) {
    let end = head.indexOf("\r\n", at);
    if (end === -1) end = head.length;
    const colon = head.indexOf(":", at);
    if (colon <= at || colon > end) throw new Error("bad header line");
    const name = head.slice(at, colon);
    const value = head.slice(colon + 1, end).trim();
    if (name.length === 4 && name.toLowerCase() === "host") host = value;
    headers.push([name, value]);
    at = end + 2;
  }
  const request = new Request(`http://${host}${head.slice(sp1 + 1, sp2)}`, {
    method: head.slice(0, sp1),
    headers,
  });
  const response = FETCH_CEILING_HANDLER(request);
  if (response.status !== 200) throw new Error(`the handler answered ${response.status}`);
}

/** One connection's request heads: the bytes of an incomplete head are kept for the next read. */
class FetchHeads {
  #pending: Uint8Array | null = null;
  readonly fallbackHost: string;
  constructor(fallbackHost: string) {
    this.fallbackHost = fallbackHost;
  }

  /**
   * Runs fetchObjects for every head completed by `data` and returns how many; throws (after
   * printing the first such error of the process to stderr) when one fails, and the caller
   * closes the connection.
   */
  push(data: Uint8Array): number {
    let bytes = data;
    if (this.#pending !== null) {
      bytes = concat([this.#pending, data]);
      this.#pending = null;
    }
    let count = 0;
    let start = 0;
    try {
      for (let at = bytes.indexOf(LF); at !== -1; at = bytes.indexOf(LF, at + 1)) {
        if (
          at >= start + 3 && bytes[at - 1] === CR && bytes[at - 2] === LF && bytes[at - 3] === CR
        ) {
          fetchObjects(HEAD_DECODER.decode(bytes.subarray(start, at - 3)), this.fallbackHost);
          count++;
          start = at + 1;
        }
      }
      if (bytes.length - start > MAX_HEAD) throw new Error("request head too long");
    } catch (error) {
      if (!fetchCeilingReported) {
        fetchCeilingReported = true;
        console.error(`servers.ts: fetch-ceiling: ${error}`);
      }
      throw error;
    }
    // A copy: Deno's read buffer is reused.
    if (start < bytes.length) this.#pending = bytes.slice(start);
    return count;
  }
}

/**
 * The raw-TCP ceiling for `route`; with `objects` the fetch-objects ceiling, which runs
 * FetchHeads over what it reads instead of counting CRLFCRLF.
 */
function startCeiling(route: Route, objects = false): void {
  const response = fixedResponse(route);
  const cache: Uint8Array[] = [];
  if (runtime === "deno") {
    const listener = G.Deno!.listen({ hostname: HOSTNAME, port: 0 });
    const port = listener.addr.port;
    listening(port);
    const handle = async (conn: DenoConn) => {
      try {
        conn.setNoDelay?.(true);
      } catch { /* not TCP */ }
      const buffer = new Uint8Array(64 * 1024);
      let tail = 0;
      const heads = objects ? new FetchHeads(`${HOSTNAME}:${port}`) : null;
      try {
        for (;;) {
          const n = await conn.read(buffer);
          if (n === null) break;
          let count: number;
          if (heads !== null) count = heads.push(buffer.subarray(0, n));
          else {
            const packed = countHeads(buffer.subarray(0, n), tail);
            tail = packed % 0x1000000;
            count = Math.floor(packed / 0x1000000);
          }
          if (count === 0) continue;
          const out = close ? response : repeated(response, count, cache);
          let written = 0;
          while (written < out.byteLength) written += await conn.write(out.subarray(written));
          if (close) break;
        }
      } catch { /* reset by the peer, or (fetch-ceiling) a head it could not use */ }
      try {
        conn.close();
      } catch { /* already closed */ }
    };
    (async () => {
      for await (const conn of listener) handle(conn);
    })();
  } else if (runtime === "bun") {
    const flush = (socket: BunSocket, bytes: Uint8Array) => {
      const written = socket.write(bytes);
      socket.data.pending = written < bytes.byteLength ? bytes.slice(Math.max(written, 0)) : null;
      if (socket.data.pending === null && socket.data.ending) socket.end();
    };
    let fallbackHost = HOSTNAME;
    const server = G.Bun!.listen({
      hostname: HOSTNAME,
      port: 0,
      socket: {
        open(socket) {
          socket.data = {
            pending: null,
            tail: 0,
            ending: false,
            heads: objects ? new FetchHeads(fallbackHost) : null,
          };
          socket.setNoDelay?.(true);
        },
        data(socket, data) {
          if (socket.data.ending) return;
          let count: number;
          const heads = socket.data.heads;
          if (heads !== null) {
            try {
              count = heads.push(data);
            } catch {
              socket.data.ending = true;
              return socket.end();
            }
          } else {
            const packed = countHeads(data, socket.data.tail);
            socket.data.tail = packed % 0x1000000;
            count = Math.floor(packed / 0x1000000);
          }
          if (count === 0) return;
          if (close) {
            socket.data.ending = true;
            return flush(socket, response);
          }
          const out = repeated(response, count, cache);
          const pending = socket.data.pending;
          if (pending === null) flush(socket, out);
          else {
            const joined = new Uint8Array(pending.byteLength + out.byteLength);
            joined.set(pending, 0);
            joined.set(out, pending.byteLength);
            socket.data.pending = joined;
          }
        },
        drain(socket) {
          if (socket.data.pending !== null) flush(socket, socket.data.pending);
        },
        error() {},
      },
    });
    fallbackHost = `${HOSTNAME}:${server.port}`;
    listening(server.port);
  } else {
    import("node:net").then(({ createServer }) => {
      let fallbackHost = HOSTNAME;
      const server = createServer({ noDelay: true }, (socket) => {
        let tail = 0;
        const heads = objects ? new FetchHeads(fallbackHost) : null;
        socket.on("data", (data: Uint8Array) => {
          let count: number;
          if (heads !== null) {
            try {
              count = heads.push(data);
            } catch {
              return socket.destroy();
            }
          } else {
            const packed = countHeads(data, tail);
            tail = packed % 0x1000000;
            count = Math.floor(packed / 0x1000000);
          }
          if (count === 0) return;
          if (close) socket.end(response);
          else socket.write(repeated(response, count, cache));
        });
        socket.on("error", () => {});
      });
      server.listen(0, HOSTNAME, () => {
        const address = server.address();
        const port = typeof address === "object" && address !== null ? address.port : 0;
        fallbackHost = `${HOSTNAME}:${port}`;
        listening(port);
      });
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Static files: the same files and URLs for every server.

const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** The file `GET /NAME` names below the static root, or null (404). */
function staticPath(pathname: string): string | null {
  const name = pathname.slice(1);
  if (pathname.charCodeAt(0) !== 0x2f || !FILE_NAME.test(name)) return null;
  return `${staticRoot!.replace(/\/+$/, "")}/${name}`;
}

function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  const query = url.indexOf("?", start);
  return url.slice(start, query === -1 ? undefined : query);
}

const notFound = () => new Response("Not Found", { status: 404 });

/** The runtime's own file serving, on its own server (see the header). */
async function startNativeStatic(): Promise<void> {
  if (runtime === "deno") {
    const deno = G.Deno!;
    deno.serve(
      { hostname: HOSTNAME, port: 0, onListen: ({ port }) => listening(port) },
      async (request) => {
        const path = staticPath(pathOf(request.url));
        if (path === null) return notFound();
        let file: DenoFsFile;
        try {
          file = await deno.open(path, { read: true });
        } catch {
          return notFound();
        }
        const info = await file.stat();
        if (!info.isFile) {
          file.close();
          return notFound();
        }
        return new Response(file.readable, {
          headers: { "content-length": String(info.size), "content-type": BYTES_TYPE },
        });
      },
    );
  } else if (runtime === "bun") {
    const bun = G.Bun!;
    const server = bun.serve({
      hostname: HOSTNAME,
      port: 0,
      idleTimeout: 120,
      fetch(request) {
        const path = staticPath(pathOf(request.url));
        return path === null ? notFound() : new Response(bun.file(path));
      },
      // A missing file fails when Bun opens it, after fetch returned: answer 404, not the
      // development error page.
      error: notFound,
    });
    listening(server.port);
  } else {
    const { createServer } = await import("node:http");
    const fs = await import("node:fs");
    const server = createServer((request, response) => {
      const url = request.url ?? "/";
      const query = url.indexOf("?");
      const path = staticPath(query === -1 ? url : url.slice(0, query));
      const missing = () => {
        response.writeHead(404, { "content-type": TEXT_TYPE, "content-length": "9" });
        response.end("Not Found");
      };
      if (path === null) return missing();
      fs.stat(path, (error, stats) => {
        if (error !== null || !stats.isFile()) return missing();
        response.writeHead(200, {
          "content-type": BYTES_TYPE,
          "content-length": String(stats.size),
        });
        const stream = fs.createReadStream(path);
        stream.on("error", () => response.destroy());
        stream.pipe(response);
      });
    });
    server.keepAliveTimeout = 120_000;
    server.listen(0, HOSTNAME, () => {
      const address = server.address();
      listening(typeof address === "object" && address !== null ? address.port : 0);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Start

if (staticRoot !== undefined) {
  if (kind === "wireserve") {
    const root = staticRoot;
    const server = serve({ hostname: HOSTNAME, port: 0 }, (request) => serveDir(request, { root }));
    server.ready.then((addr) => listening(addr.port), (error) => fail(String(error)));
  } else await startNativeStatic();
} else if (kind === "wireserve" || kind === "fast") {
  const handler = fetchHandler(kind === "fast");
  let logBytes = 0;
  const server = serve(
    {
      hostname: HOSTNAME,
      port: 0,
      ...(logFormat === undefined ? {} : {
        accessLog: { format: logFormat, write: (text: string) => void (logBytes += text.length) },
      }),
    },
    compressed ? compress(handler) : handler,
  );
  if (logFormat !== undefined) {
    // The sink's total on the way out (SIGTERM), for bench/run.mjs: proof the log was written.
    atExit.push(() => console.error(`servers.ts: ${logBytes} bytes of access log discarded`));
  }
  server.ready.then((addr) => listening(addr.port), (error) => fail(String(error)));
} else if (kind === "native") {
  if (runtime === "deno") {
    G.Deno!.serve(
      { hostname: HOSTNAME, port: 0, onListen: ({ port }) => listening(port) },
      fetchHandler(),
    );
  } else if (runtime === "bun") {
    // A longer idle timeout than Bun's 10 s default only so the idle-memory scenario's
    // connections are not reaped while it measures; nothing else changes.
    const server = G.Bun!.serve({
      hostname: HOSTNAME,
      port: 0,
      idleTimeout: 120,
      fetch: fetchHandler(),
    });
    listening(server.port);
  } else {
    const { createServer } = await import("node:http");
    const server = createServer(nodeHandler());
    // As for Bun: node:http closes idle keep-alive connections after 5 s by default.
    server.keepAliveTimeout = 120_000;
    server.listen(0, HOSTNAME, () => {
      const address = server.address();
      listening(typeof address === "object" && address !== null ? address.port : 0);
    });
  }
} else if (kind === "adapter") {
  await startAdapter(fetchHandler());
} else {
  startCeiling(routes[0], kind === "fetch-ceiling");
}
