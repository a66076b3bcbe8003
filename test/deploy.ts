/**
 * Tests of what deploying wireserve behind something else takes, end to end with real programs:
 *
 * 1. Unix domain sockets (`serve({ path, mode })`) on every transport this runtime has: curl's
 *    `--unix-socket`, the addresses a handler gets, a stale socket file replaced, a live server
 *    or a regular file on the path refused with `EADDRINUSE` (and left alone), `mode`, the file
 *    removed on shutdown, and the PROXY protocol over the socket (`trusted: ["unix"]`).
 * 2. HTTPS behind the PROXY protocol: the header before the TLS handshake, from a raw node:net
 *    client that then starts node:tls over the same socket, and from `curl --haproxy-protocol`;
 *    without the header the handshake fails and nothing is served.
 * 3. HAProxy (Debian's /usr/sbin/haproxy) in front of two servers, with `send-proxy` and with
 *    `send-proxy-v2`, and health checks that send the header too (`check-send-proxy`).
 * 4. nginx (Debian's nginx-light) in front of a server on a Unix socket and of one on TCP with
 *    upstream keep-alive; the stream module's `proxy_protocol on` where nginx has that module.
 *
 * HAProxy, nginx, curl and python3 are required: CI installs them (`.ci/run`), so a missing one
 * fails its test with a message saying which, rather than skipping it. Every socket file is in a
 * fresh directory under the system's temporary directory; TCP is on 127.0.0.1 only.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import * as tls from "node:tls";
import { existsSync } from "node:fs";
import { lstat, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "../mod.ts";
import type { Addr, ConnInfo, ServeOptions, Server, TransportName } from "../mod.ts";
import {
  delay,
  freePort,
  harness,
  parseResponses,
  RawClient,
  runCommand,
  runtimeName,
  settle,
  show,
  startProcess,
  textResponse,
  throwawayCert,
  transportsHere,
  waitUntil,
  withTimeout,
} from "./helpers.ts";
import type { RunningProcess } from "./helpers.ts";

//#region Helpers

const HAPROXY = "/usr/sbin/haproxy";
const NGINX = "/usr/sbin/nginx";
const PYTHON = "/usr/bin/python3";

/** Fails the test unless `binary` exists: CI installs it, so its absence is a broken setup. */
function requireProgram(binary: string, debianPackage: string): void {
  assert.ok(
    existsSync(binary),
    `Cannot run this test: ${binary} is missing (install the Debian package ${debianPackage}; ` +
      "bash .ci/run does)",
  );
}

/** What the handlers of these tests saw of one request. */
interface Seen {
  /** Which server answered. */
  id: string;
  path: string;
  remoteAddr: Addr;
  localAddr: Addr;
  secure: boolean;
  /** `info.proxy`, flattened: the balancer's address and the header's version and command. */
  proxy: { peer: Addr; version: 1 | 2; command: "PROXY" | "LOCAL" } | null;
}

/** A handler that records what it saw in `seen` and answers it as JSON. */
function recorder(id: string) {
  const seen: Seen[] = [];
  const handler = (request: Request, info: ConnInfo<Addr>): Response => {
    const entry: Seen = {
      id,
      path: new URL(request.url).pathname,
      remoteAddr: { ...info.remoteAddr },
      localAddr: { ...info.localAddr },
      secure: info.secure,
      proxy: info.proxy === undefined ? null : {
        peer: { ...info.proxy.peer },
        version: info.proxy.header.version,
        command: info.proxy.header.command,
      },
    };
    seen.push(entry);
    return textResponse(JSON.stringify(entry), { headers: { "content-type": "application/json" } });
  };
  return { handler, seen };
}

/** Runs `body` with a fresh directory under the system's temporary one, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "wireserve-deploy-"));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Shuts `server` down within 5 s. */
const stop = (server: Server<Addr>) => withTimeout(server.shutdown(), 5000, "Server.shutdown()");

/** Runs `body`, then shuts `server` down (within 5 s) whether it passed or not. */
async function withStarted<S extends Server<Addr>>(
  server: S,
  body: (server: S) => Promise<void>,
): Promise<void> {
  try {
    await body(server);
  } finally {
    await stop(server).catch(() => {});
  }
}

/** curl's arguments for a quiet, bounded HTTP/1.1 request. */
const CURL = ["--http1.1", "--silent", "--show-error", "--max-time", "10"];

/** Runs curl over the Unix socket at `path` and returns the body. */
const curlUnix = (path: string, urlPath = "/", extra: string[] = []) =>
  runCommand("curl", [...CURL, ...extra, "--unix-socket", path, `http://localhost${urlPath}`]);

/** Parses what a recorder answered. */
const seenOf = (body: string): Seen => JSON.parse(body) as Seen;

/** Connects a raw client to the Unix socket at `path`. */
async function connectUnix(path: string): Promise<RawClient> {
  const socket = net.connect({ path });
  const client = new RawClient(socket);
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      }),
      5000,
      `a connection to ${path}`,
    );
  } catch (error) {
    socket.destroy();
    throw error;
  }
  return client;
}

const REQUEST_CLOSE = "GET /raw HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/** The one complete response in `received`, with nothing after it. */
function only(received: string): { status: number; body: string } {
  const { responses, rest } = parseResponses(received);
  assert.equal(responses.length, 1, `one response expected, got ${show(received, 400)}`);
  assert.ok(responses[0].complete, `a complete response expected, got ${show(received, 400)}`);
  assert.equal(rest, "", `nothing after the response expected, got ${show(rest)}`);
  return { status: responses[0].status, body: responses[0].body };
}

/** A GET through a proxy with fetch, bounded; the status and body. */
async function get(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: response.status, body: await response.text() };
}

/**
 * Polls `url` until it answers 200; fails early, with the program's output, if `program` exits.
 */
async function waitForHttp(url: string, program: RunningProcess, name: string): Promise<void> {
  let exited = false;
  program.exited.then(() => exited = true);
  const deadline = Date.now() + 10_000;
  let last = "no answer yet";
  for (let attempt = 0; attempt < 400 && Date.now() < deadline; attempt++) {
    if (exited) break;
    try {
      const { status, body } = await get(url);
      if (status === 200) return;
      last = `status ${status}: ${body.slice(0, 200)}`;
    } catch (error) {
      last = String(error);
    }
    await delay(50);
  }
  assert.fail(
    `${name} did not serve ${url} within 10 s (${exited ? "it exited" : last}); ` +
      `its stderr:\n${program.stderr}\nits stdout:\n${program.stdout}`,
  );
}

/** Kills `program` and waits (bounded) until it is gone. */
async function killProcess(program: RunningProcess): Promise<void> {
  program.kill("SIGKILL");
  await withTimeout(program.exited, 5000, "the program to exit").catch(() => {});
}

//#endregion
//#region 1. Unix sockets

function unixSocketTests(transport: TransportName): void {
  /** Serves a recorder on a socket file in `dir`. */
  const serveUnix = (
    path: string,
    id = "unix",
    options: { mode?: number; proxyProtocol?: ServeOptions["proxyProtocol"] } = {},
  ) => {
    const { handler, seen } = recorder(id);
    const server = serve({ path, transport, shutdownTimeout: 1000, ...options }, handler);
    return { server, seen };
  };

  test("serve({ path }) answers curl --unix-socket, with UnixAddr addresses", async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "app.sock");
      const { server, seen } = serveUnix(path);
      await withStarted(server, async () => {
        const addr = await withTimeout(server.ready, 5000, "Server.ready");
        assert.deepEqual({ ...addr }, { transport: "unix", path });
        assert.deepEqual({ ...server.addr }, { transport: "unix", path });
        assert.ok((await lstat(path)).isSocket(), "the path should be a socket file");
        const answer = seenOf(await curlUnix(path, "/hello"));
        assert.deepEqual(answer, {
          id: "unix",
          path: "/hello",
          remoteAddr: { transport: "unix", path: "" },
          localAddr: { transport: "unix", path },
          secure: false,
          proxy: null,
        });
        assert.equal(seen.length, 1);
      });
    });
  });

  test("serve({ path }) replaces a stale socket file left by a process that died", async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "stale.sock");
      requireProgram(PYTHON, "python3");
      // Bound and never listened on, by a process that has exited: a socket file nobody answers.
      await runCommand(PYTHON, [
        "-c",
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])",
        path,
      ]);
      assert.ok((await lstat(path)).isSocket(), "python3 should have left a socket file");
      const { server } = serveUnix(path);
      await withStarted(server, async () => {
        assert.deepEqual(
          { ...await withTimeout(server.ready, 5000, "Server.ready") },
          { transport: "unix", path },
        );
        assert.equal(seenOf(await curlUnix(path, "/after-stale")).path, "/after-stale");
      });
    });
  });

  test("serve({ path }) on a path a live server listens on rejects ready with EADDRINUSE", async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "live.sock");
      const first = serveUnix(path, "first");
      await withStarted(first.server, async () => {
        await withTimeout(first.server.ready, 5000, "the first server's ready");
        const second = serveUnix(path, "second");
        await assert.rejects(
          withTimeout(second.server.ready, 5000, "the second server's ready"),
          (error: Error & { code?: string }) => error.code === "EADDRINUSE",
        );
        await withTimeout(second.server.finished, 2000, "the second server's finished");
        // The first server still has its socket, and answers on it.
        assert.equal(seenOf(await curlUnix(path, "/still")).id, "first");
        assert.equal(second.seen.length, 0);
      });
    });
  });

  test("serve({ path }) on a regular file rejects ready with EADDRINUSE and leaves it", async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "notes.txt");
      await writeFile(path, "not a socket\n");
      const { server } = serveUnix(path);
      await assert.rejects(
        withTimeout(server.ready, 5000, "Server.ready"),
        (error: Error & { code?: string }) => error.code === "EADDRINUSE",
      );
      await withTimeout(server.finished, 2000, "Server.finished");
      assert.ok((await lstat(path)).isFile(), "the file should still be a regular file");
      assert.equal(await readFile(path, "utf8"), "not a socket\n");
    });
  });

  for (const mode of [0o660, 0o600]) {
    test(`serve({ path, mode: 0o${mode.toString(8)} }) gives the socket file that mode`, async () => {
      await inTempDir(async (dir) => {
        const path = join(dir, "mode.sock");
        const { server } = serveUnix(path, "mode", { mode });
        await withStarted(server, async () => {
          await withTimeout(server.ready, 5000, "Server.ready");
          const actual = (await stat(path)).mode & 0o777;
          assert.equal(actual.toString(8), mode.toString(8));
          // We run as root here, which the mode does not stop; the server must still answer.
          assert.equal(seenOf(await curlUnix(path, "/mode")).path, "/mode");
        });
      });
    });
  }

  test("the socket file is removed once the server has shut down", async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "gone.sock");
      const { server } = serveUnix(path);
      await withTimeout(server.ready, 5000, "Server.ready");
      await curlUnix(path);
      await stop(server);
      // Deno's own listener removes the file asynchronously after close: allow a bounded settle.
      const gone = await settle(() => !existsSync(path), 2000);
      assert.ok(gone, `${path} should be removed within 2 s of the shutdown`);
    });
  });

  test('PROXY v1 over a Unix socket with trusted ["unix"] gives the header\'s addresses', async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "proxied.sock");
      const { server, seen } = serveUnix(path, "proxied", { proxyProtocol: { trusted: ["unix"] } });
      await withStarted(server, async () => {
        await withTimeout(server.ready, 5000, "Server.ready");
        const client = await connectUnix(path);
        try {
          await client.write("PROXY TCP4 203.0.113.9 192.0.2.1 4444 443\r\n" + REQUEST_CLOSE);
          await client.waitForClose();
          const { status, body } = only(client.text());
          assert.equal(status, 200);
          assert.deepEqual(seenOf(body), {
            id: "proxied",
            path: "/raw",
            remoteAddr: { hostname: "203.0.113.9", port: 4444, transport: "tcp" },
            localAddr: { hostname: "192.0.2.1", port: 443, transport: "tcp" },
            secure: false,
            proxy: { peer: { transport: "unix", path: "" }, version: 1, command: "PROXY" },
          });
          assert.equal(seen.length, 1);
        } finally {
          client.destroy();
        }
      });
    });
  });

  test('PROXY over a Unix socket without "unix" in trusted: closed unread', async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, "untrusted.sock");
      const { server, seen } = serveUnix(path, "untrusted", {
        proxyProtocol: { trusted: ["127.0.0.1"] },
      });
      await withStarted(server, async () => {
        await withTimeout(server.ready, 5000, "Server.ready");
        const client = await connectUnix(path);
        try {
          await client.tryWrite("PROXY TCP4 203.0.113.9 192.0.2.1 4444 443\r\n" + REQUEST_CLOSE);
          await client.waitForClose();
          assert.equal(client.text(), "");
          assert.equal(seen.length, 0, "the handler should not have run");
        } finally {
          client.destroy();
        }
      });
    });
  });
}

for (const transport of transportsHere()) {
  describe(`Unix domain sockets over the ${transport} transport (${runtimeName()})`, () => {
    unixSocketTests(transport);
  });
}

//#endregion
//#region 2. HTTPS behind the PROXY protocol

describe(`HTTPS behind the PROXY protocol (${runtimeName()})`, () => {
  const trusted = { proxyProtocol: { trusted: ["127.0.0.1"] } };

  /** Serves a recorder over HTTPS behind the PROXY protocol (the default transport), runs body. */
  async function httpsServer(
    body: (port: number, seen: Seen[], cert: string) => Promise<void>,
  ): Promise<void> {
    const { cert, key } = await throwawayCert();
    const { handler, seen } = recorder("https");
    const server = serve(
      { hostname: "127.0.0.1", port: 0, cert, key, shutdownTimeout: 1000, ...trusted },
      handler,
    );
    await withStarted(server, async () => {
      const { port } = await withTimeout(server.ready, 5000, "Server.ready");
      await body(port, seen, cert);
    });
  }

  test("a v1 header, then node:tls over the same socket: the handler sees the header's client, secure", async () => {
    await httpsServer(async (port, seen, cert) => {
      // The header goes first, in the clear, on a connected socket; TLS starts over it after.
      const socket = net.connect({ host: "127.0.0.1", port });
      let secure: tls.TLSSocket | null = null;
      let client: RawClient | null = null;
      try {
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            socket.once("connect", resolve);
            socket.once("error", reject);
          }),
          5000,
          "a TCP connection",
        );
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            socket.write(
              `PROXY TCP4 203.0.113.9 127.0.0.1 4444 ${port}\r\n`,
              (error) => error ? reject(error) : resolve(),
            );
          }),
          5000,
          "the PROXY header to be written",
        );
        const tlsSocket = tls.connect({
          socket,
          ca: cert,
          servername: "localhost",
          ALPNProtocols: ["http/1.1"],
        });
        secure = tlsSocket;
        client = new RawClient(tlsSocket);
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            tlsSocket.once("secureConnect", resolve);
            tlsSocket.once("error", reject);
          }),
          5000,
          "the TLS handshake after the PROXY header",
        );
        assert.equal(tlsSocket.alpnProtocol, "http/1.1");
        await client.write(REQUEST_CLOSE);
        await client.waitForClose();
        const { status, body } = only(client.text());
        assert.equal(status, 200);
        const answer = seenOf(body);
        assert.deepEqual(answer.remoteAddr, {
          hostname: "203.0.113.9",
          port: 4444,
          transport: "tcp",
        });
        assert.equal(answer.secure, true);
        assert.equal(answer.proxy?.version, 1);
        assert.equal((answer.proxy?.peer as { hostname?: string }).hostname, "127.0.0.1");
        assert.equal(seen.length, 1);
      } finally {
        client?.destroy();
        secure?.destroy();
        socket.destroy();
      }
    });
  });

  test("curl -k --haproxy-protocol https://… is served, secure, with header version 1", async () => {
    await httpsServer(async (port, seen) => {
      const body = await runCommand("curl", [
        ...CURL,
        "--insecure",
        "--haproxy-protocol",
        `https://127.0.0.1:${port}/curl`,
      ]);
      const answer = seenOf(body);
      assert.equal(answer.path, "/curl");
      assert.equal(answer.secure, true);
      assert.equal(answer.proxy?.version, 1);
      // curl's header names its own connection.
      assert.equal((answer.remoteAddr as { hostname?: string }).hostname, "127.0.0.1");
      assert.equal(seen.length, 1);
    });
  });

  test("without the header the TLS handshake fails and nothing is served", async () => {
    await httpsServer(async (port, seen, cert) => {
      const secure = tls.connect({ host: "127.0.0.1", port, ca: cert, servername: "localhost" });
      const client = new RawClient(secure);
      let handshaken = false;
      secure.once("secureConnect", () => handshaken = true);
      try {
        await client.waitForClose(5000, "the server to close a TLS client that sent no header");
        assert.equal(handshaken, false, "the handshake should not complete");
        assert.equal(client.bytesReceived, 0);
      } finally {
        client.destroy();
      }
      await assert.rejects(
        runCommand("curl", [...CURL, "--insecure", `https://127.0.0.1:${port}/`]),
        "curl without --haproxy-protocol should fail",
      );
      assert.equal(seen.length, 0, "the handler should not have run");
    });
  });
});

//#endregion
//#region 3. HAProxy

/** One HAProxy scenario: which header the server lines send. */
interface HaproxyScenario {
  version: 1 | 2;
  /** The `server` line's keyword. */
  sendProxy: "send-proxy" | "send-proxy-v2";
  /**
   * The command of a health check's header: a check has no client, so HAProxy sends
   * `PROXY UNKNOWN` in version 1 and a LOCAL command in version 2.
   */
  checkCommand: "PROXY" | "LOCAL";
}

const HAPROXY_SCENARIOS: readonly HaproxyScenario[] = [
  { version: 1, sendProxy: "send-proxy", checkCommand: "PROXY" },
  { version: 2, sendProxy: "send-proxy-v2", checkCommand: "LOCAL" },
];

/**
 * HAProxy's source address toward the servers: the only peer the servers trust. A direct client
 * (from 127.0.0.1) is then not trusted, whatever header it sends. Linux routes all of 127/8 to lo.
 */
const HAPROXY_SOURCE = "127.0.0.3";

/** A HAProxy configuration: an HTTP frontend on `front`, two servers, health checks every 100 ms. */
function haproxyConfig(front: number, ports: readonly number[], scenario: HaproxyScenario): string {
  const servers = ports.map((port, i) =>
    `  server s${i} 127.0.0.1:${port} ${scenario.sendProxy} source ${HAPROXY_SOURCE} ` +
    "check check-send-proxy inter 100ms rise 1 fall 1"
  );
  return [
    "global",
    "  log stderr format raw local0 warning",
    "defaults",
    "  mode http",
    "  log global",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    "frontend web",
    `  bind 127.0.0.1:${front}`,
    "  default_backend apps",
    "backend apps",
    "  balance roundrobin",
    "  option httpchk",
    "  http-check send meth GET uri /health ver HTTP/1.1 hdr Host haproxy",
    ...servers,
    "",
  ].join("\n");
}

for (const scenario of HAPROXY_SCENARIOS) {
  describe(`HAProxy with ${scenario.sendProxy} in front of two servers (${runtimeName()})`, () => {
    test(`both servers are reached, see the client and header v${scenario.version}; checks pass; forged headers refused`, async () => {
      requireProgram(HAPROXY, "haproxy");
      // One server on this runtime's own transport, the other on node:net (the same on Node).
      const transports = [transportsHere()[0], "node"] as const;
      const recorders = transports.map((_, i) => recorder(`s${i}`));
      const servers = transports.map((transport, i) =>
        serve({
          hostname: "127.0.0.1",
          port: 0,
          transport,
          shutdownTimeout: 1000,
          proxyProtocol: { trusted: [HAPROXY_SOURCE] },
        }, recorders[i].handler)
      );
      try {
        const ports = await Promise.all(
          servers.map(async (server) =>
            (await withTimeout(server.ready, 5000, "Server.ready")).port
          ),
        );
        await inTempDir(async (dir) => {
          const front = await freePort();
          const config = join(dir, "haproxy.cfg");
          await writeFile(config, haproxyConfig(front, ports, scenario));
          const haproxy = startProcess(HAPROXY, ["-f", config, "-db"], { ms: 60_000 });
          try {
            const url = `http://127.0.0.1:${front}`;
            await waitForHttp(`${url}/ready`, haproxy, "haproxy");

            // Health checks: several each, answered, so both servers stay up (fall 1).
            const checks = (i: number) => recorders[i].seen.filter((s) => s.path === "/health");
            await waitUntil(
              () => checks(0).length >= 3 && checks(1).length >= 3,
              `three health checks on each server; stderr:\n${haproxy.stderr}`,
              10_000,
            );
            for (const i of [0, 1]) {
              for (const check of checks(i)) {
                assert.equal(check.proxy?.version, scenario.version, "a check's header version");
                assert.equal(check.proxy?.command, scenario.checkCommand, "a check's command");
                assert.equal((check.proxy?.peer as { hostname?: string }).hostname, HAPROXY_SOURCE);
                // A check names no client, so the address is the peer's own: HAProxy's.
                assert.equal((check.remoteAddr as { hostname?: string }).hostname, HAPROXY_SOURCE);
              }
            }

            // Requests through HAProxy reach both servers; each answers its own id.
            const answers: Seen[] = [];
            for (let i = 0; i < 10; i++) {
              const { status, body } = await get(`${url}/through/${i}`);
              assert.equal(status, 200, `request ${i} through haproxy: ${body}`);
              answers.push(seenOf(body));
            }
            assert.deepEqual(new Set(answers.map((a) => a.id)), new Set(["s0", "s1"]));
            for (const [i, answer] of answers.entries()) {
              assert.equal(answer.path, `/through/${i}`);
              const served = recorders[Number(answer.id.slice(1))].seen;
              assert.ok(served.some((s) => s.path === answer.path), `${answer.id} saw ${i}`);
              assert.equal((answer.remoteAddr as { hostname?: string }).hostname, "127.0.0.1");
              assert.equal(answer.remoteAddr.transport, "tcp");
              assert.equal(answer.secure, false);
              assert.ok(answer.proxy !== null, "info.proxy should be set");
              assert.equal(answer.proxy.version, scenario.version);
              assert.equal(answer.proxy.command, "PROXY");
              assert.equal((answer.proxy.peer as { hostname?: string }).hostname, HAPROXY_SOURCE);
            }
            // HAProxy prints "Server apps/s0 is DOWN, reason: …" when a check fails.
            assert.doesNotMatch(haproxy.stderr, /is DOWN/, "no server should go down");

            // A direct client from 127.0.0.1 forging a header: not trusted, closed unread.
            for (const port of ports) {
              const direct = await RawClient.connect(port);
              try {
                await direct.tryWrite(
                  `PROXY TCP4 203.0.113.9 127.0.0.1 4444 ${port}\r\n` + REQUEST_CLOSE,
                );
                await direct.waitForClose();
                assert.equal(direct.text(), "", `a forged header on port ${port}`);
              } finally {
                direct.destroy();
              }
              const forged = recorders.flatMap((r) => r.seen).filter((s) => s.path === "/raw");
              assert.deepEqual(forged, [], "the forged request must not reach a handler");
            }

            // Still serving after the checks and the refused clients.
            assert.equal((await get(`${url}/after`)).status, 200);
          } finally {
            await killProcess(haproxy);
          }
        });
      } finally {
        await Promise.all(servers.map((server) => stop(server).catch(() => {})));
      }
    });
  });
}

//#endregion
//#region 4. nginx

/** The nginx lines every configuration here starts with: foreground, files in `dir`. */
function nginxMain(dir: string): string[] {
  return [
    "daemon off;",
    "master_process off;",
    "worker_processes 1;",
    "error_log stderr warn;",
    `pid ${join(dir, "nginx.pid")};`,
    "events { worker_connections 64; }",
  ];
}

/** The temporary paths of nginx's http module, all inside `dir`. */
function nginxTempPaths(dir: string): string[] {
  return ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((name) =>
    `  ${name}_temp_path ${join(dir, name)};`
  );
}

/** A whole nginx config: the main block, then an http block (no access log) around `lines`. */
function nginxHttpConfig(dir: string, lines: string[]): string {
  const http = ["http {", "  access_log off;", ...nginxTempPaths(dir), ...lines, "}"];
  return [...nginxMain(dir), ...http, ""].join("\n");
}

/** Starts nginx with `config` in `dir` and waits until `url` answers 200. */
async function startNginx(dir: string, config: string, url: string): Promise<RunningProcess> {
  const file = join(dir, "nginx.conf");
  await writeFile(file, config);
  const nginx = startProcess(NGINX, ["-p", dir, "-e", "stderr", "-c", file], { ms: 60_000 });
  try {
    await waitForHttp(url, nginx, "nginx");
  } catch (error) {
    await killProcess(nginx);
    throw error;
  }
  return nginx;
}

/**
 * Where nginx's stream module is, or null when it has none: built in (`--with-stream` without
 * `=dynamic`), or Debian's libnginx-mod-stream, which nginx-light does not pull in.
 */
async function nginxStreamModule(): Promise<"built-in" | string | null> {
  const version = await runCommand(NGINX, ["-V"]).catch((error) => String(error));
  if (/--with-stream(?!=dynamic)(\s|$)/.test(version)) return "built-in";
  const file = "/usr/lib/nginx/modules/ngx_stream_module.so";
  return existsSync(file) ? file : null;
}

describe(`nginx in front of wireserve (${runtimeName()})`, () => {
  const REQUESTS = 20;

  test(`proxy_pass to a Unix socket: ${REQUESTS} requests, each answered`, async () => {
    requireProgram(NGINX, "nginx-light");
    await inTempDir(async (dir) => {
      const path = join(dir, "app.sock");
      const { handler, seen } = recorder("unix");
      const server = serve({ path, mode: 0o660, shutdownTimeout: 1000 }, handler);
      await withStarted(server, async () => {
        await withTimeout(server.ready, 5000, "Server.ready");
        const front = await freePort();
        const config = nginxHttpConfig(dir, [
          "  server {",
          `    listen 127.0.0.1:${front};`,
          `    location / { proxy_pass http://unix:${path}:/; }`,
          "  }",
        ]);
        const nginx = await startNginx(dir, config, `http://127.0.0.1:${front}/ready`);
        try {
          for (let i = 0; i < REQUESTS; i++) {
            const { status, body } = await get(`http://127.0.0.1:${front}/unix/${i}`);
            assert.equal(status, 200, `request ${i}: ${body}`);
            const answer = seenOf(body);
            assert.equal(answer.path, `/unix/${i}`);
            assert.deepEqual(answer.remoteAddr, { transport: "unix", path: "" });
            assert.deepEqual(answer.localAddr, { transport: "unix", path });
          }
          assert.equal(seen.filter((s) => s.path.startsWith("/unix/")).length, REQUESTS);
        } finally {
          await killProcess(nginx);
        }
      });
    });
  });

  test(`an upstream with keepalive over TCP: ${REQUESTS} requests on fewer connections`, async () => {
    requireProgram(NGINX, "nginx-light");
    await inTempDir(async (dir) => {
      const { handler, seen } = recorder("tcp");
      await harness(transportsHere()[0], handler, {}, async (h) => {
        const front = await freePort();
        const config = nginxHttpConfig(dir, [
          `  upstream app { server 127.0.0.1:${h.port}; keepalive 4; }`,
          "  server {",
          `    listen 127.0.0.1:${front};`,
          "    location / {",
          "      proxy_pass http://app;",
          "      proxy_http_version 1.1;",
          '      proxy_set_header Connection "";',
          "    }",
          "  }",
        ]);
        const nginx = await startNginx(dir, config, `http://127.0.0.1:${front}/ready`);
        try {
          for (let i = 0; i < REQUESTS; i++) {
            const { status, body } = await get(`http://127.0.0.1:${front}/tcp/${i}`);
            assert.equal(status, 200, `request ${i}: ${body}`);
            assert.equal(seenOf(body).path, `/tcp/${i}`);
          }
          const requests = seen.filter((s) => s.path.startsWith("/tcp/"));
          assert.equal(requests.length, REQUESTS);
          // Each TCP connection from nginx has its own source port: fewer ports than requests
          // means nginx sent several requests on one connection (upstream keep-alive).
          const connections = new Set(
            requests.map((s) => (s.remoteAddr as { port?: number }).port),
          );
          assert.ok(
            connections.size < REQUESTS,
            `${REQUESTS} requests came on ${connections.size} connections: no keep-alive`,
          );
        } finally {
          await killProcess(nginx);
        }
      });
    });
  });

  test("a stream{} proxy with proxy_protocol on: the server sees the client from the header", async () => {
    requireProgram(NGINX, "nginx-light");
    const module = await nginxStreamModule();
    assert.ok(
      module !== null,
      "this nginx has no stream module: nginx-light builds it as a dynamic module, in Debian's " +
        "libnginx-mod-stream (.ci/run installs it)",
    );
    await inTempDir(async (dir) => {
      const { handler, seen } = recorder("stream");
      const options = { proxyProtocol: { trusted: ["127.0.0.1"] } };
      await harness(transportsHere()[0], handler, options, async (h) => {
        const front = await freePort();
        const config = [
          ...(module === "built-in" ? [] : [`load_module ${module};`]),
          ...nginxMain(dir),
          "stream {",
          `  server { listen 127.0.0.1:${front}; proxy_pass 127.0.0.1:${h.port}; ` +
          "proxy_protocol on; }",
          "}",
          "",
        ].join("\n");
        const nginx = await startNginx(dir, config, `http://127.0.0.1:${front}/ready`);
        try {
          const { status, body } = await get(`http://127.0.0.1:${front}/stream`);
          assert.equal(status, 200, body);
          const answer = seenOf(body);
          assert.equal((answer.remoteAddr as { hostname?: string }).hostname, "127.0.0.1");
          assert.equal(answer.proxy?.version, 1);
          assert.equal(answer.proxy?.command, "PROXY");
          assert.ok(seen.length >= 2, "the ready probe and the request");
        } finally {
          await killProcess(nginx);
        }
      });
    });
  });
});

//#endregion
