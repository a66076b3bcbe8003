#!/usr/bin/env node
// The benchmark of issue 5: wireserve beside each runtime's native server and its raw-TCP ceiling,
// same routes, same run, server pinned to one core and wrk to the other. On Node also beside
// node:http running the same fetch handler through a minimal adapter (`adapter`): Node's native
// server runs node-style handlers, which skip the undici Request and Response a fetch handler
// costs there, so only the adapter compares like with like. Beside wireserve also `fast`: the
// same wireserve server with its handler answering with mod.ts's `FastResponse`, whose string body
// (bytes too on Node) the driver writes without a body stream (ratio fast ÷ native). And issue 3's: static
// files (4 KiB and 1 MiB) from wireserve's serveDir beside the runtime's own file serving and
// nginx (a foreground nginx with a generated config, pinned like the others).
//
// And issue 16's second ceiling, in the plaintext scenarios (plaintext-50, plaintext-256,
// pipeline-16, close) only: `fetch-ceiling`, the fetch-objects ceiling, the raw-TCP ceiling that
// also builds a genuine `Request` (URL from Host and the target, the same headers, split from the
// head no more than that takes) for every request and calls the handler for its `new
// Response("Hello, World!")` before writing the fixed answer. wireserve ÷ fetch-ceiling and
// fast ÷ fetch-ceiling are what the driver can still win; fetch-ceiling ÷ ceiling is the price of
// the fetch objects on that runtime. Those scenarios also get a row of server CPU µs per request
// for every server (its CPU seconds over the wrk run ÷ the requests wrk counted, as the feature
// table's CPU per response): comparable where wrk, not the server, is the limit.
//
//   node bench/run.mjs                       all runtimes (deno bun node), 3 trials of 5 s
//   node bench/run.mjs bun node --trials 5   some runtimes, more trials
//   node bench/run.mjs --quick               1 trial of 2 s: a smoke test of the harness
//   npm run bench -- --quick                 the same through npm
//
// Plain JavaScript for any Node >= 18 (the system Node does not have to run TypeScript): it starts
// bench/servers.ts on the runtimes in ../node_modules/.bin, never the ones on PATH, and drives
// them with wrk (Debian's `wrk` package). Prints one markdown table per runtime (and one for the
// static files) and writes them to bench/results/latest.md (the raw numbers to latest.json). The
// static scenarios need nginx on PATH or in /usr/sbin (Debian's `nginx-light`); without it their
// nginx column says so and the rest runs.
//
// And the price of two middleware-ish features, wireserve and fast only, in their own table with
// server CPU per response (the server's CPU seconds over a wrk run ÷ the requests wrk counted):
// json-10k and json-10k-compressed serve the same ~10 KiB JSON body (asked for with
// `Accept-Encoding: gzip, br` both times), plain and through mod.ts's `compress(handler)`
// (default options: brotli); plaintext-log is plaintext-50 with `accessLog: { format: "combined",
// write }` into a sink that discards the text, so the price is the driver's logging work, not a
// disk or pipe. Ratios compressed ÷ plain and log ÷ plaintext-50 are of the same run.

import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
// The default import: a named zstdDecompressSync would not load on a Node before 22.15.
import zlib from "node:zlib";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { cpuSeconds, freePort, median, NPROC, tryExec, vmRssKiB } from "./proc.mjs";

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH, "..");
const BIN = join(ROOT, "node_modules", ".bin");
const RESULTS = join(BENCH, "results");
const RUNTIMES = ["deno", "bun", "node"];
const KINDS = ["wireserve", "fast", "native", "adapter", "fetch-ceiling", "ceiling", "nginx"];
/** The servers of a scenario unless it names its own. */
const DEFAULT_KINDS = ["wireserve", "fast", "native", "adapter", "fetch-ceiling", "ceiling"];
/**
 * The servers only some runtimes run: the fetch adapter is node:http's (Deno.serve and Bun.serve
 * take fetch handlers already, so their `native` is the like-for-like baseline).
 */
const KIND_RUNTIMES = { adapter: ["node"] };
/**
 * The plaintext scenarios (`GET /` answered with "Hello, World!"): the only ones the fetch-objects
 * ceiling runs in, and those with a server CPU µs/request row in the runtime tables.
 */
const PLAINTEXT_SCENARIOS = ["plaintext-50", "plaintext-256", "pipeline-16", "close"];
/** The servers only some scenarios run. */
const KIND_SCENARIOS = { "fetch-ceiling": PLAINTEXT_SCENARIOS };
const STATIC_KINDS = ["wireserve", "native", "nginx"];
const ECHO_BYTES = 16 * 1024;
const PIPELINE_DEPTH = 16;
/** The servers of the compression and access-log scenarios: only wireserve has those features. */
const FEATURE_KINDS = ["wireserve", "fast"];
/** bench/servers.ts's `/json-10k` body, byte for byte (checked against each server). */
const JSON_10K = Buffer.from(JSON.stringify(
  Array.from(
    { length: 145 },
    (_, id) => ({ id, name: `user ${id}`, email: `user${id}@example.com`, active: id % 3 === 0 }),
  ),
));
const ACCEPT_ENCODING = "gzip, br";

/** The scenarios, in table order. `route` is what the servers are started with. */
const SCENARIOS = [
  {
    id: "plaintext-50",
    label: "plaintext `GET /`, keep-alive, 50 conns",
    route: "/",
    wrk: ["-c", "50", "--latency"],
  },
  {
    id: "plaintext-256",
    label: "plaintext `GET /`, keep-alive, 256 conns",
    route: "/",
    wrk: ["-c", "256"],
  },
  {
    id: "pipeline-16",
    label: `plaintext, pipelined ×${PIPELINE_DEPTH}, 50 conns`,
    route: "/",
    wrk: ["-c", "50", "-s", join(BENCH, "pipeline.lua")],
    scriptArgs: [String(PIPELINE_DEPTH)],
  },
  {
    id: "close",
    label: "plaintext, `Connection: close`, 50 conns",
    route: "/",
    wrk: ["-c", "50", "-H", "Connection: close"],
    serverArgs: ["--close"],
  },
  { id: "json", label: "small JSON `GET /json`, 50 conns", route: "/json", wrk: ["-c", "50"] },
  {
    id: "echo",
    label: `\`POST /echo\` ${ECHO_BYTES / 1024} KiB body, 50 conns`,
    route: "/echo",
    wrk: ["-c", "50", "-s", join(BENCH, "echo.lua")],
    scriptArgs: [String(ECHO_BYTES)],
  },
  {
    id: "static-4k",
    label: "static file 4 KiB `GET /4k.bin`, keep-alive, 50 conns",
    route: "/4k.bin",
    file: { name: "4k.bin", bytes: 4096 },
    kinds: STATIC_KINDS,
    wrk: ["-c", "50"],
  },
  {
    id: "static-1m",
    label: "static file 1 MiB `GET /1m.bin`, keep-alive, 50 conns",
    route: "/1m.bin",
    file: { name: "1m.bin", bytes: 1024 * 1024 },
    kinds: STATIC_KINDS,
    wrk: ["-c", "50"],
  },
  {
    id: "plaintext-log",
    label: "plaintext `GET /`, keep-alive, 50 conns, access log (combined, discarded)",
    route: "/",
    kinds: FEATURE_KINDS,
    wrk: ["-c", "50"],
    serverArgs: ["--access-log", "combined"],
    baseline: "plaintext-50",
  },
  {
    id: "json-10k",
    label: `${JSON_10K.length.toLocaleString("en-US")} B JSON \`GET /json-10k\`, 50 conns`,
    route: "/json-10k",
    kinds: FEATURE_KINDS,
    wrk: ["-c", "50", "-H", `Accept-Encoding: ${ACCEPT_ENCODING}`],
    acceptEncoding: ACCEPT_ENCODING,
    cpuPerResponse: true,
  },
  {
    id: "json-10k-compressed",
    label: `the same JSON through \`compress(handler)\` (br), 50 conns`,
    route: "/json-10k",
    kinds: FEATURE_KINDS,
    wrk: ["-c", "50", "-H", `Accept-Encoding: ${ACCEPT_ENCODING}`],
    acceptEncoding: ACCEPT_ENCODING,
    serverArgs: ["--compress"],
    contentEncoding: "br",
    baseline: "json-10k",
  },
  { id: "idle-rss", label: "idle keep-alive memory", route: "/", rss: true },
];
/** The scenarios of the feature table, and those they are compared with. */
const FEATURE_SCENARIOS = new Set(
  SCENARIOS.filter((s) => s.baseline || s.cpuPerResponse).flatMap((s) => [s.id, s.baseline])
    .filter(Boolean),
);

/** Whether `runtime` has a server of `kind`. */
function runsOn(kind, runtime) {
  return KIND_RUNTIMES[kind]?.includes(runtime) ?? true;
}

/** The servers `scenario` runs on `runtime`, of those chosen with --kinds. */
function kindsFor(scenario, runtime) {
  return options.kinds.filter((k) =>
    (scenario.kinds ?? DEFAULT_KINDS).includes(k) && runsOn(k, runtime) &&
    (KIND_SCENARIOS[k]?.includes(scenario.id) ?? true)
  );
}

const HELP = `usage: node bench/run.mjs [deno|bun|node ...] [options]

Runs every scenario against wireserve, wireserve answering with FastResponse (fast), the native
server and the raw-TCP ceiling of each chosen runtime (default: ${RUNTIMES.join(" ")}), on Node
also node:http with a fetch adapter running the same fetch handler as wireserve, in the plaintext
scenarios (${PLAINTEXT_SCENARIOS.join(", ")}) also the fetch-objects ceiling (the raw
ceiling building a Request and the handler's Response per request), prints a markdown table per
runtime and writes it to bench/results/latest.md. The static-* scenarios compare wireserve's
serveDir with the runtime's own file serving and nginx instead (no fast, no ceilings), files
generated in a temporary directory.

  --trials N         trials per scenario and server, the median is reported (default 3)
  --duration S       seconds per wrk run (default 5)
  --warmup S         seconds of wrk before the trials, per server and scenario (default 1)
  --quick            1 trial of 2 s: a smoke test
  --scenarios A,B    only these scenarios (${SCENARIOS.map((s) => s.id).join(", ")})
  --kinds A,B        only these servers (${KINDS.join(", ")}; nginx is in static-* only,
                     fast, ceiling and adapter in the others, adapter on node only,
                     fetch-ceiling in the plaintext ones only; plaintext-log and
                     json-10k* run wireserve and fast only)
  --idle N           idle connections for idle-rss (default 5000)
  --server-cpu N     the core the servers are pinned to (default 0)
  --load-cpu N       the core wrk is pinned to (default 1)`;

// ---------------------------------------------------------------------------------------------
// Arguments

const options = {
  runtimes: [],
  trials: 3,
  duration: 5,
  warmup: 1,
  scenarios: SCENARIOS.map((s) => s.id),
  kinds: [...KINDS],
  idle: 5000,
  serverCpu: "0",
  loadCpu: "1",
};
{
  const args = process.argv.slice(2);
  const value = (i, name) => {
    const v = args[i];
    if (v === undefined) usage(`${name} needs a value`);
    return v;
  };
  const positive = (v, name) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) usage(`${name} needs a positive integer, got ${v}`);
    return n;
  };
  const list = (v, allowed, name) => {
    const items = v.split(",").filter(Boolean);
    for (const item of items) {
      if (!allowed.includes(item)) usage(`${name}: unknown ${item} (one of ${allowed.join(", ")})`);
    }
    return items;
  };
  let quick = false;
  const explicit = {};
  for (let i = 0; i < args.length; i++) {
    let arg = args[i];
    let inline;
    if (arg.startsWith("--") && arg.includes("=")) {
      inline = arg.slice(arg.indexOf("=") + 1);
      arg = arg.slice(0, arg.indexOf("="));
    }
    const next = () => inline ?? value(++i, arg);
    if (arg === "-h" || arg === "--help") {
      console.log(HELP);
      process.exit(0);
    } else if (arg === "--quick") quick = true;
    else if (arg === "--trials") explicit.trials = positive(next(), arg);
    else if (arg === "--duration") explicit.duration = positive(next(), arg);
    else if (arg === "--warmup") options.warmup = Math.max(0, Number(next()) || 0);
    else if (arg === "--idle") options.idle = positive(next(), arg);
    else if (arg === "--scenarios") options.scenarios = list(next(), options.scenarios, arg);
    else if (arg === "--kinds") options.kinds = list(next(), KINDS, arg);
    else if (arg === "--server-cpu") options.serverCpu = next();
    else if (arg === "--load-cpu") options.loadCpu = next();
    else if (RUNTIMES.includes(arg)) {
      if (!options.runtimes.includes(arg)) options.runtimes.push(arg);
    } else usage(`unknown argument: ${arg}`);
  }
  if (quick) {
    options.trials = 1;
    options.duration = 2;
  }
  Object.assign(options, explicit);
  if (options.runtimes.length === 0) options.runtimes.push(...RUNTIMES);
  if (options.kinds.length === 0) usage("--kinds selects nothing");
}

function usage(message) {
  console.error(`run.mjs: ${message}\n\n${HELP}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (message) => process.stderr.write(`${message}\n`);

const HAVE_TASKSET = tryExec("taskset", ["-V"]) !== null || tryExec("which", ["taskset"]);
const PIN = HAVE_TASKSET && NPROC >= 2;

function pinned(cpu, command) {
  return PIN ? ["taskset", "-c", cpu, ...command] : command;
}

const CHILD_ENV = { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };

/** The command that runs bench/servers.ts on `runtime` (Deno may read `readDir` if given). */
function runtimeCommand(runtime, args, readDir) {
  const script = join(BENCH, "servers.ts");
  if (runtime === "deno") {
    const read = readDir ? [`--allow-read=${readDir}`] : [];
    return [join(BIN, "deno"), "run", "--allow-net=127.0.0.1", ...read, script, ...args];
  }
  return [join(BIN, runtime), script, ...args];
}

// ---------------------------------------------------------------------------------------------
// Static files and nginx

const NGINX = [process.env.NGINX, "/usr/sbin/nginx", tryExec("which", ["nginx"])]
  .find((p) => p && existsSync(p)) ?? null;

/** The temporary directory of the static scenarios: www/ (the files) and nginx/ (its prefix). */
let staticDir = null;
/** The generated files' bytes by name, for the response checks. */
const staticFiles = {};

/** Writes the files the chosen static scenarios serve: random bytes, so nothing compresses. */
function prepareStatic(scenarios) {
  const wanted = scenarios.filter((s) => s.file);
  if (wanted.length === 0) return;
  staticDir = realpathSync(mkdtempSync(join(tmpdir(), "wireserve-bench-")));
  // nginx's workers drop to `nobody` when it runs as root: they must reach the files.
  chmodSync(staticDir, 0o755);
  const www = join(staticDir, "www");
  mkdirSync(www, { mode: 0o755 });
  mkdirSync(join(staticDir, "nginx"), { mode: 0o755 });
  for (const { file } of wanted) {
    const bytes = randomBytes(file.bytes);
    writeFileSync(join(www, file.name), bytes, { mode: 0o644 });
    staticFiles[file.name] = bytes;
  }
}

function removeStatic() {
  if (staticDir === null) return;
  try {
    rmSync(staticDir, { recursive: true, force: true });
  } catch { /* best effort */ }
  staticDir = null;
}

/**
 * nginx's configuration: the brief's minimal one (one worker, sendfile, no access log), plus
 * what makes it comparable and runnable anywhere: every file application/octet-stream as the
 * others send it, no cap on requests per keep-alive connection (nginx closes after 1,000 by
 * default; the runtimes do not), and its temporary paths in its own prefix so that it needs no
 * write access to /var/lib/nginx.
 */
function nginxConfig(prefix, port, root) {
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((name) => `  ${name}_temp_path ${join(prefix, `${name}_temp`)};`)
    .join("\n");
  return `daemon off;
worker_processes 1;
error_log stderr;
pid ${join(prefix, `nginx-${port}.pid`)};
events {}
http {
  access_log off;
  sendfile on;
  default_type application/octet-stream;
  keepalive_requests 1000000;
${temp}
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`;
}

/** nginx's version line, or null when it is not installed. */
function nginxVersion() {
  if (NGINX === null) return null;
  // `nginx -v` prints its version on stderr.
  const { stdout, stderr, status } = spawnSync(NGINX, ["-v"], { encoding: "utf8" });
  if (status !== 0) return null;
  return `${stdout ?? ""}${stderr ?? ""}`.trim().replace(/^nginx version: /, "") || null;
}

// ---------------------------------------------------------------------------------------------
// CPU time, to tell a saturated server from a saturated wrk

function loadAverage() {
  return tryExec("cat", ["/proc/loadavg"])?.split(" ").slice(0, 3).join(" ") ?? null;
}

function runtimeVersion(runtime) {
  const out = tryExec(join(BIN, runtime), ["--version"]);
  if (out === null) return null;
  const first = out.split("\n")[0];
  return runtime === "bun" ? `bun ${first}` : runtime === "node" ? `node ${first}` : first;
}

// ---------------------------------------------------------------------------------------------
// Servers

const live = new Set();

/** Starts a server; resolves once it printed its port. */
function startServer(runtime, kind, scenario, maxSeconds) {
  if (kind === "nginx") return startNginx(scenario, maxSeconds);
  const route = scenario.route;
  const www = scenario.file ? join(staticDir, "www") : null;
  const command = pinned(
    options.serverCpu,
    runtimeCommand(
      runtime,
      [
        kind,
        ...(www ? ["--static", www] : [route]),
        ...(scenario.serverArgs ?? []),
        "--max-seconds",
        String(maxSeconds),
        "--echo-bytes",
        String(ECHO_BYTES),
      ],
      www,
    ),
  );
  // Raise the open-file limit for the server (5,000 idle connections and more): as root the hard
  // limit can go up, otherwise the soft limit goes to the hard one.
  const child = spawn(
    "bash",
    [
      "-c",
      'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"',
      "bash",
      ...command,
    ],
    { cwd: ROOT, env: CHILD_ENV, stdio: ["ignore", "pipe", "pipe"] },
  );
  const server = { runtime, kind, route, child, pid: child.pid, port: 0, stderr: "", exited: null };
  live.add(server);
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    if (server.stderr.length < 64 * 1024) server.stderr += d;
  });
  child.on("exit", (code, signal) => {
    server.exited = signal ?? code;
    live.delete(server);
  });
  return new Promise((resolvePort, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      stopServer(server);
      reject(new Error(`${runtime} ${kind} printed no port within 30 s; stderr: ${server.stderr}`));
    }, 30_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d) => {
      if (server.port) return;
      out += d;
      const newline = out.indexOf("\n");
      if (newline === -1) return;
      server.port = Number(out.slice(0, newline).trim());
      clearTimeout(timer);
      if (!(server.port > 0)) reject(new Error(`${runtime} ${kind} printed no port: ${out}`));
      else resolvePort(server);
    });
    child.on("exit", () => {
      clearTimeout(timer);
      reject(new Error(`${runtime} ${kind} exited before listening: ${server.stderr.trim()}`));
    });
  });
}

/**
 * Starts nginx in the foreground on a port picked by binding port 0, with a generated config in
 * the static directory; resolves once the port accepts connections. It runs under coreutils'
 * `timeout` (its lifetime, as --max-seconds is the runtimes'), which puts it in a process group of
 * its own: SIGTERM goes to nginx through `timeout`, and a crash of this script kills the group.
 */
async function startNginx(scenario, maxSeconds) {
  if (NGINX === null) throw new Error("nginx is not installed (apt-get install nginx-light)");
  const port = await freePort();
  const prefix = join(staticDir, "nginx");
  const config = join(prefix, `nginx-${port}.conf`);
  writeFileSync(config, nginxConfig(prefix, port, join(staticDir, "www")));
  const command = pinned(options.serverCpu, [
    "timeout",
    String(maxSeconds),
    NGINX,
    "-p",
    prefix,
    "-c",
    config,
    "-e",
    "stderr",
  ]);
  const child = spawn(command[0], command.slice(1), {
    cwd: prefix,
    env: CHILD_ENV,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const server = {
    runtime: "nginx",
    kind: "nginx",
    route: scenario.route,
    child,
    pid: child.pid,
    port,
    stderr: "",
    exited: null,
    group: true,
  };
  live.add(server);
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    if (server.stderr.length < 64 * 1024) server.stderr += d;
  });
  child.stdout.resume();
  child.on("exit", (code, signal) => {
    server.exited = signal ?? code;
    live.delete(server);
  });
  for (let waited = 0; waited < 10_000; waited += 50) {
    if (server.exited !== null) {
      throw new Error(`nginx exited (${server.exited}) before listening: ${server.stderr.trim()}`);
    }
    try {
      (await connect(port)).destroy();
      return server;
    } catch { /* not yet */ }
    await sleep(50);
  }
  await stopServer(server);
  throw new Error(`nginx did not listen on ${port} within 10 s; stderr: ${server.stderr}`);
}

async function stopServer(server) {
  if (server.exited !== null) return;
  server.child.kill("SIGTERM");
  for (let i = 0; i < 30 && server.exited === null; i++) await sleep(100);
  if (server.exited === null) {
    try {
      if (server.group) process.kill(-server.pid, "SIGKILL");
      else server.child.kill("SIGKILL");
    } catch {
      server.child.kill("SIGKILL");
    }
  }
  for (let i = 0; i < 20 && server.exited === null; i++) await sleep(50);
}

function killAll() {
  for (const server of live) {
    try {
      // nginx's workers outlive a killed master: kill its whole group (see startNginx).
      if (server.group) process.kill(-server.pid, "SIGKILL");
      else server.child.kill("SIGKILL");
    } catch {
      try {
        server.child.kill("SIGKILL");
      } catch { /* gone */ }
    }
  }
}
process.on("exit", () => {
  killAll();
  removeStatic();
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client for the checks and the idle connections.

/**
 * Sends `request` on `socket` and resolves with { status, headers, body } of one response framed
 * by Content-Length (all the servers here send it).
 */
function exchange(socket, request) {
  return new Promise((resolveResponse, reject) => {
    let buffer = Buffer.alloc(0);
    const onData = (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const headEnd = buffer.indexOf("\r\n\r\n");
      if (headEnd === -1) return;
      const head = buffer.subarray(0, headEnd).toString("latin1").split("\r\n");
      const status = Number(head[0].split(" ")[1]);
      const headers = {};
      for (const line of head.slice(1)) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      const length = Number(headers["content-length"] ?? 0);
      if (buffer.length < headEnd + 4 + length) return;
      done();
      resolveResponse({
        status,
        headers,
        body: buffer.subarray(headEnd + 4, headEnd + 4 + length),
      });
    };
    const onError = (error) => {
      done();
      reject(error);
    };
    const onClose = () => {
      done();
      reject(new Error("connection closed before a whole response"));
    };
    const done = () => {
      socket.off("data", onData);
      socket.off("error", onError);
      socket.off("close", onClose);
    };
    socket.on("data", onData);
    socket.on("error", onError);
    socket.on("close", onClose);
    socket.write(request);
  });
}

function connect(port) {
  return new Promise((resolveSocket, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.off("error", reject);
      resolveSocket(socket);
    });
    socket.once("error", reject);
  });
}

const ECHO_BODY = Buffer.alloc(ECHO_BYTES, "a");

function requestFor(route, close = false, acceptEncoding = null) {
  const connection = (close ? "Connection: close\r\n" : "") +
    (acceptEncoding === null ? "" : `Accept-Encoding: ${acceptEncoding}\r\n`);
  if (route === "/echo") {
    return Buffer.concat([
      Buffer.from(
        `POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n` +
          `Content-Length: ${ECHO_BYTES}\r\n${connection}\r\n`,
      ),
      ECHO_BODY,
    ]);
  }
  return Buffer.from(`GET ${route} HTTP/1.1\r\nHost: 127.0.0.1\r\n${connection}\r\n`);
}

/**
 * Checks a server's answers for its route (two on one connection; for the close scenario one, and
 * that the server then closes); returns a list of problems (empty when fine).
 */
async function checkServer(server, scenario) {
  const problems = [];
  const close = scenario.id === "close";
  let socket;
  try {
    socket = await connect(server.port);
    const ended = new Promise((r) => {
      socket.once("end", r);
      socket.once("close", r);
    });
    for (let i = 0; i < (close ? 1 : 2); i++) {
      const response = await exchange(
        socket,
        requestFor(server.route, close, scenario.acceptEncoding ?? null),
      );
      if (response.status !== 200) problems.push(`status ${response.status}`);
      const type = response.headers["content-type"];
      if (scenario.file) {
        const expected = staticFiles[scenario.file.name];
        if (response.headers["content-length"] !== String(expected.length)) {
          problems.push(`content-length ${response.headers["content-length"] ?? "missing"}`);
        }
        if (!response.body.equals(expected)) {
          problems.push(`body of ${response.body.length} bytes is not the file's`);
        }
        if (!/^application\/octet-stream/i.test(type ?? "")) {
          problems.push(`content-type ${type ?? "missing"}`);
        }
      } else if (server.route === "/") {
        if (response.body.toString() !== "Hello, World!") problems.push("wrong body");
        if (!/^text\/plain/i.test(type ?? "")) problems.push(`content-type ${type ?? "missing"}`);
      } else if (server.route === "/json-10k") {
        const coding = response.headers["content-encoding"] ?? null;
        if (coding !== (scenario.contentEncoding ?? null)) {
          problems.push(
            `content-encoding ${coding ?? "none"}, not ${scenario.contentEncoding ?? "none"}`,
          );
        }
        let body = null;
        try {
          body = coding === null
            ? response.body
            : coding === "br"
            ? zlib.brotliDecompressSync(response.body)
            : coding === "gzip"
            ? zlib.gunzipSync(response.body)
            : coding === "zstd" && zlib.zstdDecompressSync
            ? zlib.zstdDecompressSync(response.body)
            : null;
        } catch (error) {
          problems.push(`${coding} body does not decode: ${error.message}`);
        }
        if (body !== null && !body.equals(JSON_10K)) problems.push("wrong body");
        if (!/^application\/json/i.test(type ?? "")) {
          problems.push(`content-type ${type ?? "missing"}`);
        }
        // The body's bytes as sent (compressed or not), for the feature table.
        server.bodyBytes = response.body.length;
      } else if (server.route === "/json") {
        if (response.body.toString() !== '{"message":"Hello, World!"}') problems.push("wrong body");
        if (!/^application\/json/i.test(type ?? "")) {
          problems.push(`content-type ${type ?? "missing"}`);
        }
      } else if (!response.body.equals(ECHO_BODY)) {
        problems.push(`echo body of ${response.body.length} bytes differs`);
      }
      if (problems.length) break;
    }
    if (close) {
      const timeout = sleep(2000).then(() => "timeout");
      if (await Promise.race([ended, timeout]) === "timeout") {
        problems.push("connection still open 2 s after a `Connection: close` response");
      }
    }
  } catch (error) {
    problems.push(`request failed: ${error.message}`);
  } finally {
    socket?.destroy();
  }
  return [...new Set(problems)];
}

// ---------------------------------------------------------------------------------------------
// wrk

function parseDuration(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return null;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2]];
  return Number(m[1]) * scale;
}

const BYTE_UNITS = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };

/**
 * Runs wrk; resolves with { rps, transfer (bytes/s, wrk's Transfer/sec, heads included), p99,
 * requests, non2xx, errors: {connect, read, write, timeout}, wrkCpu and serverCpu (percent of
 * one core over the run; the server's when `serverPid` is given), load (1-minute load average
 * after the run) }.
 */
function runWrk(scenario, port, seconds, serverPid) {
  const url = `http://127.0.0.1:${port}${scenario.route === "/" ? "/" : scenario.route}`;
  const args = ["-t1", "-d", `${seconds}s`, "--timeout", "4s", ...scenario.wrk, url];
  if (scenario.scriptArgs) args.push("--", ...scenario.scriptArgs);
  const command = pinned(options.loadCpu, ["wrk", ...args]);
  // bash's `times` reports the CPU time of wrk once it has been waited for.
  const shell = ['"$@"; code=$?; times >&2; exit $code', "bash", ...command];
  const serverBefore = serverPid ? cpuSeconds(serverPid) : null;
  const startedAt = performance.now();
  return new Promise((resolveResult) => {
    const child = spawn("bash", ["-c", ...shell], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => err += d);
    const timer = setTimeout(() => child.kill("SIGKILL"), (seconds + 30) * 1000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      const elapsed = (performance.now() - startedAt) / 1000;
      const serverAfter = serverPid ? cpuSeconds(serverPid) : null;
      const times = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(err);
      if (times) err = err.slice(0, times.index);
      const wrkCpu = times
        ? (60 * Number(times[1]) + Number(times[2]) + 60 * Number(times[3]) + Number(times[4])) /
          elapsed * 100
        : null;
      const serverCpuSeconds = serverBefore !== null && serverAfter !== null
        ? serverAfter - serverBefore
        : null;
      const serverCpu = serverCpuSeconds === null ? null : serverCpuSeconds / elapsed * 100;
      const transfer = /Transfer\/sec:\s+([\d.]+)([KMGT]?B)/.exec(out);
      const number = (re) => {
        const m = re.exec(out);
        return m ? Number(m[1]) : null;
      };
      const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/
        .exec(out);
      const p99 = /^\s*99%\s+(\S+)/m.exec(out);
      resolveResult({
        ok: code === 0 && /Requests\/sec/.test(out),
        rps: number(/Requests\/sec:\s+([\d.]+)/),
        transfer: transfer ? Number(transfer[1]) * BYTE_UNITS[transfer[2]] : null,
        wrkCpu,
        serverCpu,
        serverCpuSeconds,
        load: loadAverage()?.split(" ")[0] ?? null,
        requests: number(/(\d+) requests in/),
        // Server CPU per response, µs: its CPU time over the run (wrk's start and exit included,
        // when it has nothing to do) ÷ the responses wrk counted.
        cpuPerResponse: serverCpuSeconds !== null && number(/(\d+) requests in/) > 0
          ? serverCpuSeconds * 1e6 / number(/(\d+) requests in/)
          : null,
        p99: p99 ? parseDuration(p99[1]) : null,
        non2xx: number(/Non-2xx or 3xx responses:\s+(\d+)/) ?? 0,
        errors: socketErrors
          ? {
            connect: Number(socketErrors[1]),
            read: Number(socketErrors[2]),
            write: Number(socketErrors[3]),
            timeout: Number(socketErrors[4]),
          }
          : { connect: 0, read: 0, write: 0, timeout: 0 },
        output: code === 0 ? undefined : `${out}${err}`.trim(),
        command: `wrk ${args.join(" ")}`,
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Idle memory

function openFilesLimit() {
  try {
    const m = /Max open files\s+(\d+|unlimited)/.exec(readFileSync("/proc/self/limits", "utf8"));
    return m && m[1] !== "unlimited" ? Number(m[1]) : Infinity;
  } catch {
    return Infinity;
  }
}

/**
 * Opens `count` connections to `server`, each with one GET / answered, and holds them idle;
 * returns { baseline, loaded, open, perConnection } in KiB.
 */
async function measureIdle(server, count) {
  const route = requestFor("/");
  // Warm the server a little so first-request costs are in the baseline, not in the connections.
  const warm = [];
  for (let i = 0; i < 20; i++) {
    warm.push(
      connect(server.port).then(async (s) => {
        for (let j = 0; j < 5; j++) await exchange(s, route);
        s.destroy();
      }),
    );
  }
  await Promise.all(warm);
  await sleep(500);
  const baseline = vmRssKiB(server.pid);
  const sockets = [];
  let failed = 0;
  let firstError = null;
  const BATCH = 200;
  for (let i = 0; i < count; i += BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + BATCH); j++) {
      batch.push(
        connect(server.port)
          .then(async (socket) => {
            sockets.push(socket);
            socket.on("error", () => {});
            await exchange(socket, route);
          })
          .catch((error) => {
            failed++;
            firstError ??= error.message;
          }),
      );
    }
    await Promise.all(batch);
  }
  await sleep(1000);
  const loaded = vmRssKiB(server.pid);
  const open = sockets.filter((s) => !s.destroyed && s.readyState === "open").length;
  for (const socket of sockets) socket.destroy();
  const perConnection = baseline !== null && loaded !== null && open > 0
    ? (loaded - baseline) / open
    : null;
  return { baseline, loaded, open, failed, firstError, perConnection };
}

// ---------------------------------------------------------------------------------------------
// The run

const startedAt = new Date();
const command = `node ${
  relative(process.cwd(), fileURLToPath(import.meta.url)) || "bench/run.mjs"
} ${process.argv.slice(2).join(" ")}`.trim();

/** What was measured: mod.ts's commit, whether the working tree changes it, and its hash. */
const SOURCE = (() => {
  const commit = tryExec("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const dirty = tryExec("git", ["-C", ROOT, "status", "--porcelain", "--", "mod.ts"]);
  let sha256 = null;
  try {
    sha256 = createHash("sha256").update(readFileSync(join(ROOT, "mod.ts"))).digest("hex");
  } catch { /* no mod.ts */ }
  return { commit, modified: dirty === null ? null : dirty !== "", sha256 };
})();

function machine() {
  let model = "unknown";
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) model = m[1].trim();
  } catch { /* not Linux */ }
  let mem = "";
  try {
    const m = /MemTotal:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
    if (m) mem = `, ${Math.round(Number(m[1]) / 1024 / 1024)} GiB RAM`;
  } catch { /* not Linux */ }
  const kernel = tryExec("uname", ["-sr"]) ?? "";
  const load = tryExec("cat", ["/proc/loadavg"])?.split(" ").slice(0, 3).join(" ");
  return { nproc: NPROC, model, mem, kernel, load };
}

/** wrk's version line; `wrk -v` prints it and exits non-zero. Null when wrk is missing. */
function wrkVersionLine() {
  try {
    const out = execFileSync("wrk", ["-v"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    return out.split("\n")[0].trim() || null;
  } catch (error) {
    return `${error.stdout ?? ""}${error.stderr ?? ""}`.split("\n")[0].trim() || null;
  }
}

async function main() {
  const wrkVersion = wrkVersionLine();
  if (!wrkVersion) {
    console.error("run.mjs: wrk is not installed (apt-get install wrk)");
    process.exit(1);
  }
  const versions = {};
  for (const runtime of options.runtimes) {
    versions[runtime] = runtimeVersion(runtime);
    if (versions[runtime] === null) {
      console.error(`run.mjs: ${join(BIN, runtime)} does not run; npm install first`);
      process.exit(1);
    }
  }
  const limit = openFilesLimit();
  if (options.scenarios.includes("idle-rss") && limit < options.idle + 200) {
    const idle = Math.max(100, limit - 200);
    log(
      `run.mjs: open-file limit ${limit}: idle-rss uses ${idle} connections, not ${options.idle}`,
    );
    options.idle = idle;
  }
  if (!PIN) log("run.mjs: taskset or a second core is missing; nothing is pinned");

  const info = machine();
  const scenarios = SCENARIOS.filter((s) => options.scenarios.includes(s.id));
  prepareStatic(scenarios);
  if (scenarios.some((s) => s.file) && options.kinds.includes("nginx")) {
    versions.nginx = nginxVersion();
    if (versions.nginx === null) log("run.mjs: nginx is not installed; its column stays empty");
  }
  const results = {};
  const notes = {};
  for (const runtime of options.runtimes) {
    results[runtime] = {};
    notes[runtime] = [];
    for (const scenario of scenarios) {
      results[runtime][scenario.id] = {};
      for (const kind of kindsFor(scenario, runtime)) {
        results[runtime][scenario.id][kind] = { trials: [], problems: [] };
      }
      if (kindsFor(scenario, runtime).length === 0) continue;
      log(`\n== ${runtime}: ${scenario.id} (load average ${loadAverage()})`);
      if (scenario.rss) await runIdle(runtime, scenario, results[runtime][scenario.id]);
      else await runWrkScenario(runtime, scenario, results[runtime][scenario.id]);
    }
  }

  const markdown = report(info, versions, wrkVersion, scenarios, results);
  removeStatic();
  console.log(`\n${markdown}`);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "latest.md"), markdown);
  writeFileSync(
    join(RESULTS, "latest.json"),
    JSON.stringify(
      { command, startedAt, machine: info, source: SOURCE, versions, options, results },
      null,
      2,
    ),
  );
  log(`\nwritten: ${relative(process.cwd(), join(RESULTS, "latest.md"))}`);
}

/** Seconds a server of one wrk scenario may live: all its runs, with room to spare. */
function lifetime() {
  const runs = options.trials * options.kinds.length + options.kinds.length;
  return Math.ceil(runs * (options.duration + options.warmup + 10) + 120);
}

async function runWrkScenario(runtime, scenario, slot) {
  const servers = {};
  const scenarioKinds = kindsFor(scenario, runtime);
  try {
    for (const kind of scenarioKinds) {
      try {
        servers[kind] = await startServer(runtime, kind, scenario, lifetime());
      } catch (error) {
        slot[kind].problems.push(`did not start: ${error.message.slice(0, 300)}`);
        log(`   ${kind}: did not start: ${error.message}`);
        continue;
      }
      const problems = await checkServer(servers[kind], scenario);
      if (problems.length) {
        slot[kind].problems.push(`check: ${problems.join(", ")}`);
        log(`   ${kind}: check: ${problems.join(", ")}`);
      }
      if (options.warmup > 0) {
        const warm = await runWrk(scenario, servers[kind].port, options.warmup);
        slot[kind].warmupRequests = warm.requests ?? 0;
      }
    }
    for (let trial = 0; trial < options.trials; trial++) {
      // Rotate the order from trial to trial, so that drift on a shared machine spreads evenly.
      const kinds = scenarioKinds.map((_, i) => scenarioKinds[(i + trial) % scenarioKinds.length]);
      for (const kind of kinds) {
        const server = servers[kind];
        if (!server) continue;
        if (server.exited !== null) {
          const problem = `exited (${server.exited}) during the run: ${
            server.stderr.trim().slice(-300)
          }`;
          if (!slot[kind].problems.includes(problem)) slot[kind].problems.push(problem);
          continue;
        }
        const result = await runWrk(scenario, server.port, options.duration, server.pid);
        slot[kind].trials.push(result);
        const errs = Object.entries(result.errors).filter(([, n]) => n > 0)
          .map(([k, n]) => `${k} ${n}`);
        if (result.non2xx) errs.push(`non-2xx ${result.non2xx}`);
        if (!result.ok) errs.push(`wrk failed: ${(result.output ?? "").slice(0, 200)}`);
        const cpu = (v) => (v === null ? "?" : Math.round(v));
        log(
          `   trial ${trial + 1} ${kind.padEnd(13)} ${
            String(Math.round(result.rps ?? 0)).padStart(8)
          } req/s` +
            (scenario.file && result.transfer !== null
              ? `  ${(result.transfer / 2 ** 20).toFixed(1).padStart(7)} MiB/s`
              : "") +
            (result.p99 !== null ? `  p99 ${result.p99.toFixed(2)} ms` : "") +
            ((FEATURE_SCENARIOS.has(scenario.id) || PLAINTEXT_SCENARIOS.includes(scenario.id)) &&
                result.cpuPerResponse !== null
              ? `  ${result.cpuPerResponse.toFixed(1)} µs cpu/resp`
              : "") +
            (scenario.acceptEncoding && result.transfer !== null && result.rps
              ? `  ${Math.round(result.transfer / result.rps)} B/resp`
              : "") +
            `  cpu server ${cpu(result.serverCpu)}% wrk ${cpu(result.wrkCpu)}%` +
            `  load ${result.load}` +
            (errs.length ? `  [${errs.join(", ")}]` : ""),
        );
        await sleep(200);
      }
    }
  } finally {
    for (const kind of Object.keys(servers)) {
      const server = servers[kind];
      if (server.exited !== null && !slot[kind].problems.some((p) => p.startsWith("exited"))) {
        slot[kind].problems.push(`exited (${server.exited}): ${server.stderr.trim().slice(-300)}`);
      }
      const stderr = server.stderr.trim();
      if (stderr && server.exited === null) {
        slot[kind].problems.push(
          `stderr: ${stderr.split("\n").slice(0, 3).join(" / ").slice(0, 300)}`,
        );
      }
      await stopServer(server);
      if (server.bodyBytes !== undefined) slot[kind].bodyBytes = server.bodyBytes;
      // servers.ts prints what its access-log sink was given on the way out (SIGTERM).
      const logged = /(\d+) bytes of access log discarded/.exec(server.stderr);
      if (logged) slot[kind].logBytes = Number(logged[1]);
      else if (scenario.serverArgs?.includes("--access-log")) {
        slot[kind].problems.push("no access-log total printed on exit");
      }
    }
  }
}

async function runIdle(runtime, scenario, slot) {
  for (let trial = 0; trial < options.trials; trial++) {
    for (const kind of kindsFor(scenario, runtime)) {
      let server;
      try {
        server = await startServer(runtime, kind, scenario, 300);
      } catch (error) {
        slot[kind].problems.push(`did not start: ${error.message.slice(0, 300)}`);
        continue;
      }
      try {
        const result = await measureIdle(server, options.idle);
        slot[kind].trials.push(result);
        if (result.failed) {
          slot[kind].problems.push(
            `${result.failed} of ${options.idle} idle connections failed (${result.firstError})`,
          );
        }
        if (result.open < options.idle - result.failed) {
          slot[kind].problems.push(`only ${result.open} connections still open when measured`);
        }
        log(
          `   trial ${trial + 1} ${kind.padEnd(13)} ${result.perConnection?.toFixed(1)} KiB/conn ` +
            `(RSS ${result.baseline} → ${result.loaded} KiB, ${result.open} open` +
            (result.failed ? `, ${result.failed} failed` : "") + ")",
        );
      } finally {
        if (server.exited !== null) {
          slot[kind].problems.push(
            `exited (${server.exited}): ${server.stderr.trim().slice(-300)}`,
          );
        }
        await stopServer(server);
      }
    }
  }
  for (const kind of kindsFor(scenario, runtime)) {
    slot[kind].problems = [...new Set(slot[kind].problems)];
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function fmtRps(v) {
  return v === null ? "—" : Math.round(v).toLocaleString("en-US");
}
function fmtRatio(a, b) {
  return a === null || b === null || b === 0 ? "—" : `${(a / b).toFixed(2)}×`;
}

function summarize(slot, kind, pick) {
  const trials = slot[kind]?.trials ?? [];
  return median(trials.map(pick));
}

/** Errors wrk counted, summed over the trials, as "read 3, non-2xx 1". */
function errorSummary(slot, kind) {
  const total = { connect: 0, read: 0, write: 0, timeout: 0, "non-2xx": 0 };
  for (const t of slot[kind]?.trials ?? []) {
    if (!t.errors) continue;
    for (const k of ["connect", "read", "write", "timeout"]) total[k] += t.errors[k];
    total["non-2xx"] += t.non2xx;
    if (t.ok === false) total["wrk failed"] = (total["wrk failed"] ?? 0) + 1;
  }
  const parts = Object.entries(total).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
  for (const problem of slot[kind]?.problems ?? []) parts.push(problem);
  return parts;
}

function escapeCell(text) {
  return text.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

function report(info, versions, wrkVersion, allScenarios, results) {
  // The servers of each runtime's table: the adapter's column is on Node's only.
  const tableKinds = (runtime) =>
    options.kinds.filter((k) => DEFAULT_KINDS.includes(k) && runsOn(k, runtime));
  const tableRuntimes = options.runtimes.filter((r) => tableKinds(r).length > 0);
  // The feature scenarios (wireserve and fast only) have a table of their own.
  const isFeature = (s) => Boolean(s.baseline || s.cpuPerResponse);
  const scenarios = tableRuntimes.length === 0
    ? []
    : allScenarios.filter((s) => !s.file && !isFeature(s));
  const featureScenarios = allScenarios.filter((s) =>
    FEATURE_SCENARIOS.has(s.id) && options.runtimes.some((r) => kindsFor(s, r).length > 0)
  );
  const staticScenarios = allScenarios.filter((s) =>
    s.file && options.runtimes.some((r) => kindsFor(s, r).length > 0)
  );
  const lines = [];
  lines.push("# wireserve benchmark");
  lines.push("");
  lines.push(`- Command: \`${command}\` (from \`${ROOT}\`)`);
  lines.push(`- Date: ${startedAt.toISOString()}`);
  lines.push(
    `- Machine: ${info.nproc} × ${info.model}${info.mem}; ${info.kernel}; load average ${info.load} at the start, ${machine().load} at the end (other work on the machine skews the numbers)`,
  );
  lines.push(
    `- Pinning: ${
      PIN
        ? `server on core ${options.serverCpu} (\`taskset -c ${options.serverCpu}\`), wrk on core ${options.loadCpu} (\`taskset -c ${options.loadCpu}\`, one thread)`
        : "none (taskset or a second core missing)"
    }`,
  );
  lines.push(
    `- Source: mod.ts at ${SOURCE.commit ?? "?"}${
      SOURCE.modified ? " with uncommitted changes" : ""
    } (sha256 ${SOURCE.sha256?.slice(0, 16) ?? "?"}…)`,
  );
  lines.push(`- Load generator: ${wrkVersion.split(" [")[0]}`);
  lines.push(
    `- Runtimes: ${options.runtimes.map((r) => versions[r]).join("; ")}`,
  );
  lines.push(
    `- ${options.trials} trial(s) of ${options.duration} s per scenario and server after ${options.warmup} s of warm-up, medians` +
      (allScenarios.some((s) => s.rss)
        ? `; idle memory with ${
          options.idle.toLocaleString("en-US")
        } keep-alive connections (one request each), ` +
          `RSS growth over the warmed idle baseline ÷ connections still open`
        : ""),
  );
  if (scenarios.length > 0) {
    lines.push(
      "- Servers: `wireserve` = `serve()` from mod.ts with default options; " +
        "`wireserve+FastResponse` = the same server and responses, its handler answering with mod.ts's `FastResponse` " +
        "(`new FastResponse(…)`), whose string body (bytes too on Node) the driver writes without a body stream (byte for byte the same but on Bun, where only it sends a Content-Type for `/`; see bench/servers.ts); " +
        "`native` = `Deno.serve` / `Bun.serve` / `node:http`; " +
        "`ceiling` = the runtime's raw TCP API writing a fixed response per CRLFCRLF, no parsing (see bench/servers.ts)",
    );
    if (tableRuntimes.some((r) => tableKinds(r).includes("fetch-ceiling"))) {
      lines.push(
        "- `fetch ceiling` (plaintext scenarios only) = the same raw server, which for every request head also builds a genuine `Request` " +
          "(the head decoded, request line and header lines split, nothing validated; URL `http://` + Host + target, the method, the headers as the init array), " +
          'calls the handler (wireserve\'s `() => new Response("Hello, World!")`), reads its status and writes the fixed response: ' +
          "wireserve (or fast) ÷ fetch ceiling is what the driver can still win, fetch ceiling ÷ ceiling the price of the fetch objects on that runtime",
      );
      lines.push(
        "- CPU µs/req (plaintext scenarios) = the server's user + system CPU seconds over a wrk run × 10^6 ÷ the requests wrk counted " +
          "(median of the trials; wrk's start and exit included): comparable where wrk, not the server, is the limit",
      );
    }
    if (tableRuntimes.some((r) => tableKinds(r).includes("adapter"))) {
      lines.push(
        "- On Node, `native` (node:http) runs node-style handlers (`writeHead` + `end`), which build no undici `Request` or `Response`; " +
          "`adapter` = node:http running the same fetch handler as wireserve through the smallest correct adapter: a `Request` from the " +
          'IncomingMessage (URL from Host, every header, a body as a web stream with `duplex: "half"`), then `writeHead` with the ' +
          "`Response`'s headers and `end` of its body read whole, with a Content-Length. wireserve ÷ adapter compares fetch handler with fetch handler",
      );
    }
  }
  for (const runtime of scenarios.length > 0 ? tableRuntimes : []) {
    const kinds = tableKinds(runtime);
    const native = runtime === "deno"
      ? "Deno.serve"
      : runtime === "bun"
      ? "Bun.serve"
      : "node:http";
    const ceiling = runtime === "deno"
      ? "Deno.listen"
      : runtime === "bun"
      ? "Bun.listen"
      : "node:net";
    const names = {
      wireserve: "wireserve",
      fast: "wireserve+FastResponse",
      native,
      adapter: "node:http + fetch adapter",
      "fetch-ceiling": `fetch ceiling (${ceiling} + Request, Response)`,
      ceiling: `ceiling (${ceiling})`,
    };
    lines.push("");
    lines.push(`## ${versions[runtime]}`);
    lines.push("");
    const header = ["scenario", ...kinds.map((k) => names[k])];
    if (kinds.includes("wireserve") && kinds.includes("native")) header.push("wireserve ÷ native");
    if (kinds.includes("fast") && kinds.includes("native")) header.push("fast ÷ native");
    if (kinds.includes("wireserve") && kinds.includes("adapter")) {
      header.push("wireserve ÷ adapter");
    }
    if (kinds.includes("wireserve") && kinds.includes("fetch-ceiling")) {
      header.push("wireserve ÷ fetch ceiling");
    }
    if (kinds.includes("fast") && kinds.includes("fetch-ceiling")) {
      header.push("fast ÷ fetch ceiling");
    }
    if (kinds.includes("wireserve") && kinds.includes("ceiling")) {
      header.push("wireserve ÷ ceiling");
    }
    if (kinds.includes("fetch-ceiling") && kinds.includes("ceiling")) {
      header.push("fetch ceiling ÷ ceiling");
    }
    header.push("errors and problems");
    lines.push(`| ${header.join(" | ")} |`);
    lines.push(
      `|${header.map((_, i) => (i === 0 || i === header.length - 1 ? "---" : "--:")).join("|")}|`,
    );
    const row = (label, pick, fmt, slot, withProblems = true) => {
      const values = Object.fromEntries(kinds.map((k) => [k, summarize(slot, k, pick)]));
      const cells = [label, ...kinds.map((k) => fmt(values[k]))];
      if (kinds.includes("wireserve") && kinds.includes("native")) {
        cells.push(fmtRatio(values.wireserve, values.native));
      }
      if (kinds.includes("fast") && kinds.includes("native")) {
        cells.push(fmtRatio(values.fast, values.native));
      }
      if (kinds.includes("wireserve") && kinds.includes("adapter")) {
        cells.push(fmtRatio(values.wireserve, values.adapter));
      }
      if (kinds.includes("wireserve") && kinds.includes("fetch-ceiling")) {
        cells.push(fmtRatio(values.wireserve, values["fetch-ceiling"]));
      }
      if (kinds.includes("fast") && kinds.includes("fetch-ceiling")) {
        cells.push(fmtRatio(values.fast, values["fetch-ceiling"]));
      }
      if (kinds.includes("wireserve") && kinds.includes("ceiling")) {
        cells.push(fmtRatio(values.wireserve, values.ceiling));
      }
      if (kinds.includes("fetch-ceiling") && kinds.includes("ceiling")) {
        cells.push(fmtRatio(values["fetch-ceiling"], values.ceiling));
      }
      const problems = !withProblems ? [] : kinds.map((k) => {
        const parts = errorSummary(slot, k);
        return parts.length ? `${k}: ${parts.join("; ")}` : null;
      }).filter(Boolean);
      cells.push(
        !withProblems ? "(as above)" : problems.length ? escapeCell(problems.join(" · ")) : "none",
      );
      lines.push(`| ${cells.join(" | ")} |`);
    };
    for (const scenario of scenarios) {
      const slot = results[runtime][scenario.id];
      if (scenario.rss) {
        row(
          `${scenario.label}: KiB per connection (lower is better)`,
          (t) => t.perConnection,
          (v) => (v === null ? "—" : v.toFixed(1)),
          slot,
        );
        continue;
      }
      row(`${scenario.label}: req/s`, (t) => t.rps, fmtRps, slot);
      if (PLAINTEXT_SCENARIOS.includes(scenario.id)) {
        // Server CPU per request from the same runs; their errors are on the req/s row.
        row(
          `${scenario.id}: server CPU µs/req (lower is better)`,
          (t) => t.cpuPerResponse,
          (v) => (v === null ? "—" : v.toFixed(1)),
          slot,
          false,
        );
      }
      if (scenario.id === "plaintext-50") {
        // p99 from the same runs (wrk --latency); their errors are on the row above.
        row(
          "p99 latency, plaintext, 50 conns: ms (lower is better)",
          (t) => t.p99,
          (v) => (v === null ? "—" : v.toFixed(2)),
          slot,
          false,
        );
      }
    }
  }
  if (featureScenarios.some(isFeature)) featureReport(lines, versions, featureScenarios, results);
  if (staticScenarios.length > 0) staticReport(lines, versions, staticScenarios, results);
  lines.push("");
  lines.push(
    "Ratios are wireserve (or, for fast ÷ …, wireserve+FastResponse; for fetch ceiling ÷ ceiling, the fetch ceiling) ÷ the other server (for req/s higher is better; for CPU, latency and memory lower is better). " +
      "Errors are wrk's socket errors and `Non-2xx or 3xx responses` summed over the trials, plus anything a server " +
      "printed to stderr, a failed response check, or an exit during the run.",
  );
  return `${lines.join("\n")}\n`;
}

/**
 * The compression and access-log table: per runtime, wireserve's and fast's req/s and server CPU
 * per response in each feature scenario and the one it is compared with, bytes per response, and
 * the ratios to that baseline from the same run.
 */
function featureReport(lines, versions, scenarios, results) {
  const kinds = FEATURE_KINDS.filter((k) => options.kinds.includes(k));
  const names = { wireserve: "wireserve", fast: "wireserve+FastResponse" };
  const byId = Object.fromEntries(SCENARIOS.map((s) => [s.id, s]));
  const mod = (() => {
    try {
      const text = readFileSync(join(ROOT, "mod.ts"), "utf8");
      const m = /BROTLI_PARAM_QUALITY\]: level\("br", options\.level\?\.br, (\d+)/.exec(text);
      return m ? `brotli quality ${m[1]}` : "brotli, quality unknown";
    } catch {
      return "brotli, quality unknown";
    }
  })();
  lines.push("");
  lines.push("## Compression and access log: throughput and server CPU per response");
  lines.push("");
  lines.push(
    `- json-10k: \`GET /json-10k\`, a ${
      JSON_10K.length.toLocaleString("en-US")
    }-byte JSON body (145 users, stringified once) ` +
      `as a string \`Response\` (fast: \`FastResponse\`), wrk sending \`Accept-Encoding: ${ACCEPT_ENCODING}\`; ` +
      `json-10k-compressed: the same handler through mod.ts's \`compress(handler)\`, default options (${mod} in mod.ts as run)`,
  );
  lines.push(
    '- plaintext-log: plaintext-50\'s `GET /` with `serve({ accessLog: { format: "combined", write } })`, ' +
      "`write` a sink that only adds up the text's length (the driver's logging work, no I/O); " +
      "log bytes are the sink's total ÷ every request the server answered (warm-up and checks included)",
  );
  lines.push(
    "- CPU µs/resp = the server's user + system CPU seconds over a wrk run × 10^6 ÷ the requests wrk " +
      "counted (median of the trials); wire B/resp = wrk's Transfer/sec ÷ req/s (heads included); " +
      "body B = the body's bytes as sent, from the response check. Ratios are to the baseline " +
      "scenario of the same run (req/s: higher is better; CPU: lower is better)",
  );
  for (const runtime of options.runtimes) {
    lines.push("");
    lines.push(`### ${versions[runtime]}`);
    lines.push("");
    const header = [
      "scenario",
      "server",
      "req/s",
      "server CPU %",
      "CPU µs/resp",
      "body B",
      "wire B/resp",
      "log B/req",
      "req/s ÷ baseline",
      "CPU/resp ÷ baseline",
      "errors and problems",
    ];
    lines.push(`| ${header.join(" | ")} |`);
    lines.push(
      `|${header.map((_, i) => (i < 2 || i === header.length - 1 ? "---" : "--:")).join("|")}|`,
    );
    for (const scenario of scenarios) {
      const slot = results[runtime][scenario.id];
      const base = scenario.baseline && options.scenarios.includes(scenario.baseline)
        ? results[runtime][scenario.baseline]
        : null;
      for (const kind of kinds) {
        if (!slot?.[kind]) continue;
        const rps = summarize(slot, kind, (t) => t.rps);
        const cpu = summarize(slot, kind, (t) => t.cpuPerResponse);
        const transfer = summarize(slot, kind, (t) => (t.rps ? t.transfer / t.rps : null));
        const baseRps = base ? summarize(base, kind, (t) => t.rps) : null;
        const baseCpu = base ? summarize(base, kind, (t) => t.cpuPerResponse) : null;
        const served = (slot[kind].trials ?? []).reduce((n, t) => n + (t.requests ?? 0), 0) +
          (slot[kind].warmupRequests ?? 0) + 2;
        const logPerRequest = slot[kind].logBytes !== undefined
          ? (slot[kind].logBytes / served).toFixed(0)
          : "—";
        const problems = errorSummary(slot, kind);
        lines.push(
          `| ${
            [
              base ? `${scenario.id} (÷ ${byId[scenario.baseline].id})` : scenario.id,
              names[kind],
              fmtRps(rps),
              (() => {
                const v = summarize(slot, kind, (t) => t.serverCpu);
                return v === null ? "—" : String(Math.round(v));
              })(),
              cpu === null ? "—" : cpu.toFixed(1),
              slot[kind].bodyBytes === undefined
                ? "—"
                : slot[kind].bodyBytes.toLocaleString("en-US"),
              transfer === null ? "—" : Math.round(transfer).toLocaleString("en-US"),
              logPerRequest,
              base ? fmtRatio(rps, baseRps) : "",
              base ? fmtRatio(cpu, baseCpu) : "",
              problems.length ? escapeCell(problems.join("; ")) : "none",
            ].join(" | ")
          } |`,
        );
      }
    }
  }
}

const NATIVE_FILES = {
  deno: "`Deno.serve` + `Deno.open(path)`, `file.stat()`, `new Response(file.readable)`",
  bun: "`Bun.serve` + `new Response(Bun.file(path))`",
  node: "`node:http` + `fs.stat`, `fs.createReadStream(path).pipe(response)`",
};

/** The static files' table: every runtime's rows in one table, nginx beside each. */
function staticReport(lines, versions, scenarios, results) {
  const kinds = STATIC_KINDS.filter((k) => options.kinds.includes(k));
  const has = (k) => kinds.includes(k);
  lines.push("");
  lines.push("## Static files");
  lines.push("");
  lines.push(
    "- `wireserve` = `serve()` + `serveDir(request, { root })` from mod.ts, default options " +
      "(ETag, Last-Modified, conditionals, Range, precompressed-sibling negotiation, symlink " +
      "containment by realpath)",
  );
  lines.push(
    `- \`native\` = the runtime's own file serving, nothing more: ${
      options.runtimes.map((r) => `${r}: ${NATIVE_FILES[r]}`).join("; ")
    }`,
  );
  if (has("nginx")) {
    lines.push(
      `- \`nginx\` = ${
        versions.nginx ?? "not installed"
      } in the foreground: 1 worker, \`sendfile on\`, \`access_log off\`, open_file_cache off ` +
        "(its default), `keepalive_requests 1000000` (its default of 1,000 would close " +
        "connections the runtimes keep), `default_type application/octet-stream`; measured " +
        "again beside each runtime, in the same rotation",
    );
  }
  lines.push(
    "- The same files for all: random bytes in a temporary directory, `GET /4k.bin` (4,096 bytes) " +
      "and `GET /1m.bin` (1,048,576 bytes), keep-alive, 50 connections, every server pinned as above",
  );
  lines.push(
    "- MiB/s is wrk's Transfer/sec (response heads included; wrk's MB is 2^20 bytes). Ratios are of " +
      "req/s. CPU is user + system time over the run, % of one core: the server's process tree " +
      "(nginx: master and worker) / wrk's; a server well below 100 % while wrk is near 100 % was " +
      "limited by wrk, not by itself",
  );
  lines.push("");
  const header = [
    "runtime",
    "file",
    ...kinds.map((k) => `${k} req/s`),
    ...kinds.map((k) => `${k} MiB/s`),
  ];
  if (has("wireserve") && has("native")) header.push("wireserve ÷ native");
  if (has("wireserve") && has("nginx")) header.push("wireserve ÷ nginx");
  header.push(`CPU % server / wrk (${kinds.join(" · ")})`, "errors and problems");
  lines.push(`| ${header.join(" | ")} |`);
  lines.push(
    `|${header.map((_, i) => (i < 2 || i === header.length - 1 ? "---" : "--:")).join("|")}|`,
  );
  const cpu = (v) => (v === null ? "?" : String(Math.round(v)));
  for (const runtime of options.runtimes) {
    const name = (versions[runtime] ?? runtime).split(" (")[0];
    for (const scenario of scenarios) {
      const slot = results[runtime][scenario.id];
      const rps = Object.fromEntries(kinds.map((k) => [k, summarize(slot, k, (t) => t.rps)]));
      const mib = Object.fromEntries(
        kinds.map((k) => [k, summarize(slot, k, (t) => t.transfer)]),
      );
      const cells = [
        name,
        scenario.file.bytes >= 2 ** 20
          ? `${scenario.file.bytes / 2 ** 20} MiB`
          : `${scenario.file.bytes / 1024} KiB`,
        ...kinds.map((k) => fmtRps(rps[k])),
        ...kinds.map((k) => (mib[k] === null ? "—" : (mib[k] / 2 ** 20).toFixed(1))),
      ];
      if (has("wireserve") && has("native")) cells.push(fmtRatio(rps.wireserve, rps.native));
      if (has("wireserve") && has("nginx")) cells.push(fmtRatio(rps.wireserve, rps.nginx));
      cells.push(
        kinds.map((k) =>
          `${cpu(summarize(slot, k, (t) => t.serverCpu))}/${
            cpu(summarize(slot, k, (t) => t.wrkCpu))
          }`
        ).join(" · "),
      );
      const problems = kinds.map((k) => {
        const parts = errorSummary(slot, k);
        return parts.length ? `${k}: ${parts.join("; ")}` : null;
      }).filter(Boolean);
      cells.push(problems.length ? escapeCell(problems.join(" · ")) : "none");
      lines.push(`| ${cells.join(" | ")} |`);
    }
  }
}

main().catch((error) => {
  console.error(error);
  killAll();
  process.exit(1);
});
