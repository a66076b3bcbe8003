// The WebSocket echo servers bench/ws.mjs compares, started on whichever runtime runs this file
// (Deno, Bun or Node 24):
//
//   deno run --allow-net=127.0.0.1 --v8-flags=--expose-gc bench/ws_servers.ts KIND [--max-seconds N]
//   bun bench/ws_servers.ts KIND
//   node --expose-gc bench/ws_servers.ts KIND
//
// KIND
//   wireserve  `serve()` + `upgradeWebSocket(request)` from ../mod.ts, default options
//   native     Deno: `Deno.serve` + `Deno.upgradeWebSocket(request)`;
//              Bun: `Bun.serve` with `server.upgrade(request)` and its `websocket` handlers
//              (perMessageDeflate off, its default);
//              Node: node:http's createServer + the `ws` package's `WebSocketServer({ server,
//              perMessageDeflate: false })`
//
// Every one echoes each message as it came: text as text, binary as binary (binaryType
// "arraybuffer" where there is one). No compression anywhere. Besides the upgrade, every server
// answers `GET /gc` by collecting garbage as far as the runtime lets it (`gc()` with
// --expose-gc on Node and Deno, `Bun.gc(true)` on Bun) and saying which it did ("gc" or
// "no-gc"), so bench/ws.mjs can read a settled RSS; any other request that is not an upgrade gets
// 426.
//
// Always on 127.0.0.1 and a port the OS picks, printed as the first line of stdout. Exits on
// SIGTERM, and in any case after --max-seconds (default 900).

import { serve, upgradeWebSocket } from "../mod.ts";

type Kind = "wireserve" | "native";
const HOSTNAME = "127.0.0.1";

interface DenoWebSocket {
  binaryType: string;
  onmessage: ((event: MessageEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  send(data: string | ArrayBuffer): void;
}
interface DenoApi {
  args: string[];
  exit(code?: number): never;
  addSignalListener(signal: "SIGTERM", handler: () => void): void;
  serve(
    options: { hostname: string; port: number; onListen(addr: { port: number }): void },
    handler: (request: Request) => Response | Promise<Response>,
  ): unknown;
  upgradeWebSocket(request: Request): { socket: DenoWebSocket; response: Response };
}
interface BunWebSocket {
  send(data: string | Uint8Array): number;
}
interface BunApi {
  gc(force: boolean): void;
  serve(options: {
    hostname: string;
    port: number;
    fetch(
      request: Request,
      server: { upgrade(request: Request): boolean },
    ): Response | undefined;
    websocket: {
      perMessageDeflate: boolean;
      message(ws: BunWebSocket, message: string | Uint8Array): void;
    };
  }): { port: number };
}
interface NodeProcess {
  argv: string[];
  exit(code?: number): never;
  on(signal: "SIGTERM", handler: () => void): void;
}

const G = globalThis as unknown as {
  Deno?: DenoApi;
  Bun?: BunApi;
  process?: NodeProcess;
  gc?: () => void;
};
const runtime: "deno" | "bun" | "node" = G.Bun !== undefined
  ? "bun"
  : G.Deno !== undefined
  ? "deno"
  : "node";

function exit(code: number): never {
  if (runtime === "deno") return G.Deno!.exit(code);
  return G.process!.exit(code);
}

function fail(message: string): never {
  console.error(`ws_servers.ts: ${message}`);
  return exit(2);
}

const argv = runtime === "deno" ? G.Deno!.args : G.process!.argv.slice(2);
let kind: Kind | undefined;
let maxSeconds = 900;
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === "--max-seconds") {
    maxSeconds = Number(argv[++i]);
    if (!Number.isInteger(maxSeconds) || maxSeconds < 1) {
      fail("--max-seconds needs a positive integer");
    }
  } else if ((arg === "wireserve" || arg === "native") && kind === undefined) kind = arg;
  else fail(`unknown argument ${JSON.stringify(arg)}; usage: ws_servers.ts wireserve|native`);
}
if (kind === undefined) fail("the first argument must be wireserve or native");

setTimeout(() => {
  console.error(`ws_servers.ts: ${kind} on ${runtime} exits after its ${maxSeconds} s lifetime`);
  exit(0);
}, maxSeconds * 1000);
if (runtime === "deno") G.Deno!.addSignalListener("SIGTERM", () => exit(0));
else G.process!.on("SIGTERM", () => exit(0));

function listening(port: number): void {
  console.log(String(port));
}

/** Collects garbage as far as this runtime allows; what it did, for `GET /gc`. */
function collect(): string {
  if (runtime === "bun") {
    G.Bun!.gc(true);
    return "gc";
  }
  if (typeof G.gc === "function") {
    G.gc();
    return "gc";
  }
  return "no-gc";
}

function isGc(request: Request): boolean {
  const url = request.url;
  return url.endsWith("/gc") && request.headers.get("upgrade") === null;
}

const notUpgrade = () => new Response("Upgrade Required", { status: 426 });

if (kind === "wireserve") {
  const server = serve({ port: 0, hostname: HOSTNAME }, (request) => {
    if (isGc(request)) return new Response(collect());
    if (request.headers.get("upgrade") === null) return notUpgrade();
    const { socket, response } = upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  server.ready.then((addr) => listening(addr.port));
} else if (runtime === "deno") {
  const deno = G.Deno!;
  deno.serve(
    { hostname: HOSTNAME, port: 0, onListen: ({ port }) => listening(port) },
    (request) => {
      if (isGc(request)) return new Response(collect());
      if (request.headers.get("upgrade") === null) return notUpgrade();
      const { socket, response } = deno.upgradeWebSocket(request);
      socket.binaryType = "arraybuffer";
      socket.onmessage = (e) => socket.send(e.data);
      socket.onerror = () => {};
      return response;
    },
  );
} else if (runtime === "bun") {
  const server = G.Bun!.serve({
    hostname: HOSTNAME,
    port: 0,
    fetch(request, srv) {
      if (isGc(request)) return new Response(collect());
      if (srv.upgrade(request)) return undefined;
      return notUpgrade();
    },
    websocket: {
      perMessageDeflate: false,
      message(ws, message) {
        ws.send(message);
      },
    },
  });
  listening(server.port);
} else {
  // A computed specifier: Deno and Bun never load `ws`.
  const wsModule = "ws";
  const http = await import("node:http");
  const { WebSocketServer } = await import(wsModule);
  const server = http.createServer((request, response) => {
    if (request.url === "/gc") {
      const body = collect();
      response.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
      response.end(body);
    } else {
      response.writeHead(426, { "content-length": 16 });
      response.end("Upgrade Required");
    }
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on(
    "connection",
    (ws: {
      on(event: string, listener: (...args: unknown[]) => void): void;
      send(data: unknown, options: { binary: boolean }): void;
    }) => {
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary as boolean }));
      ws.on("error", () => {});
    },
  );
  server.listen(0, HOSTNAME, () => {
    const address = server.address();
    listening(typeof address === "object" && address !== null ? address.port : 0);
  });
}
