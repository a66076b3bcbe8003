/**
 * Helpers for test/hostile.ts: hostile clients against a live server on 127.0.0.1.
 *
 * - time: `delay`, `withTimeout`, `settle`, `waitUntil`; every wait is bounded in count and time;
 * - `Peer`: a raw `node:net` (or `node:tls`) client that records every byte and when it closed;
 * - `harness`: a server on a free port over one transport, with every client it opened destroyed
 *   and the server shut down (bounded) when the test ends;
 * - `parseResponses`: a small HTTP/1.1 response parser for what a `Peer` received;
 * - `throwawayCert`: a self-signed certificate made once per run with openssl;
 * - `run`: a child process (openssl, curl, sh) through async `execFile`;
 * - `mulberry32`: a seeded PRNG for the fuzz test.
 *
 * @module
 */

import * as net from "node:net";
import * as tls from "node:tls";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "../mod.ts";
import {
  bytesOf as latin1,
  delay,
  settle,
  textOf as fromLatin1,
  waitUntil,
  withTimeout,
} from "./helpers.ts";
import type { Handler, ServeOptions, Server, TransportName } from "../mod.ts";

//#region Time

// The time helpers are the driver tests' own (test/helpers.ts).
export { delay, settle, waitUntil, withTimeout };

//#endregion
//#region Bytes

// The byte helpers are test/helpers.ts's, under the names these tests use.
export { fromLatin1, latin1 };

/** A printable form of raw bytes for test names and messages. */
export function show(text: string, max = 160): string {
  const shown = JSON.stringify(text.length > max ? text.slice(0, max) + "…" : text);
  return shown.slice(1, -1);
}

//#endregion
//#region Clients

/** A raw client socket that records what it receives and when it closed. */
export class Peer {
  readonly socket: net.Socket;
  readonly chunks: Uint8Array[] = [];
  bytesReceived = 0;
  /** The server half-closed (FIN). */
  ended = false;
  /** The socket is closed, by either side. */
  closed = false;
  /** `Date.now()` when the socket ended or closed, 0 while open. */
  closedAt = 0;
  /** `Date.now()` when the first byte arrived, 0 before. */
  firstByteAt = 0;
  error: Error | null = null;
  #text = "";
  #textChunks = 0;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      if (this.firstByteAt === 0) this.firstByteAt = Date.now();
      this.chunks.push(new Uint8Array(chunk));
      this.bytesReceived += chunk.length;
    });
    socket.on("end", () => {
      this.ended = true;
      this.closedAt ||= Date.now();
    });
    socket.on("close", () => {
      this.closed = true;
      this.closedAt ||= Date.now();
    });
    socket.on("error", (error: Error) => this.error = error);
  }

  /** Whether the server closed its side or the socket is gone. */
  get done(): boolean {
    return this.ended || this.closed;
  }

  /** Everything received so far, as latin1 text. */
  text(): string {
    if (this.#textChunks !== this.chunks.length) {
      this.#text += fromLatin1(this.chunks.slice(this.#textChunks));
      this.#textChunks = this.chunks.length;
    }
    return this.#text;
  }

  /** Writes bytes (a string as latin1); resolves once handed to the kernel, rejects on error. */
  write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? latin1(data) : data;
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed || this.socket.writableEnded) {
        reject(new Error("the socket is closed"));
        return;
      }
      this.socket.write(bytes, (error?: Error | null) => error ? reject(error) : resolve());
    });
  }

  /** Writes and ignores failures (the server may have closed already). */
  async tryWrite(data: string | Uint8Array): Promise<boolean> {
    try {
      await this.write(data);
      return true;
    } catch {
      return false;
    }
  }

  /** Waits until the received text satisfies `predicate`. */
  async waitForText(predicate: (text: string) => boolean, what: string, ms = 3000): Promise<void> {
    await waitUntil(
      () => predicate(this.text()),
      `${what}; received ${show(this.text())}`,
      ms,
    );
  }

  /** Waits until the server closes its side (or the socket closes). */
  async waitForClose(ms = 3000, what = "the server to close the connection"): Promise<void> {
    await waitUntil(() => this.done, `${what}; received ${show(this.text())}`, ms);
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Closes the socket with a TCP reset where the runtime can, else at once. */
  reset(): void {
    const socket = this.socket as net.Socket & { resetAndDestroy?: () => void };
    if (typeof socket.resetAndDestroy === "function") {
      try {
        socket.resetAndDestroy();
        return;
      } catch { /* fall back */ }
    }
    socket.destroy();
  }
}

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  host?: string;
  /** The local address to connect from. */
  localAddress?: string;
  ms?: number;
}

/** Connects a plain TCP {@linkcode Peer} to `port`. */
export async function connect(port: number, options: ConnectOptions = {}): Promise<Peer> {
  const host = options.host ?? "127.0.0.1";
  const socket = net.connect({ port, host, localAddress: options.localAddress });
  const peer = new Peer(socket);
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
        socket.once("close", () => reject(new Error("closed before connecting")));
      }),
      options.ms ?? 5000,
      `a connection to ${host}:${port}`,
    );
  } catch (error) {
    socket.destroy();
    throw error;
  }
  socket.setNoDelay(true);
  return peer;
}

/** Connects a TLS {@linkcode Peer} to `port` on 127.0.0.1, trusting `ca`, offering http/1.1. */
export async function connectTls(port: number, ca: string): Promise<Peer & { alpn: string }> {
  const socket = tls.connect({
    host: "127.0.0.1",
    port,
    ca,
    servername: "localhost",
    ALPNProtocols: ["http/1.1"],
  });
  const peer = new Peer(socket) as Peer & { alpn: string };
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once("secureConnect", resolve);
        socket.once("error", reject);
        socket.once("close", () => reject(new Error("closed during the TLS handshake")));
      }),
      5000,
      `a TLS connection to 127.0.0.1:${port}`,
    );
  } catch (error) {
    socket.destroy();
    throw error;
  }
  peer.alpn = String(socket.alpnProtocol);
  return peer;
}

//#endregion
//#region Server harness

/** The built-in transports this runtime can run: its own, and node:net everywhere. */
export function transportsHere(): TransportName[] {
  const runtime = globalThis as { Bun?: unknown; Deno?: unknown };
  if (runtime.Bun !== undefined) return ["bun", "node"];
  if (runtime.Deno !== undefined) return ["deno", "node"];
  return ["node"];
}

/** The name of this runtime. */
export function runtimeName(): string {
  const runtime = globalThis as { Bun?: unknown; Deno?: unknown };
  return runtime.Bun !== undefined ? "bun" : runtime.Deno !== undefined ? "deno" : "node";
}

/** What a test body gets from {@linkcode harness}. */
export interface Harness {
  readonly server: Server;
  readonly port: number;
  /** Connects a TCP peer that is destroyed when the test ends. */
  connect(options?: ConnectOptions): Promise<Peer>;
  /** Connects a TLS peer that is destroyed when the test ends. */
  connectTls(ca: string): Promise<Peer & { alpn: string }>;
  /** Tracks a peer made elsewhere so that it is destroyed when the test ends. */
  track(peer: Peer): Peer;
  /** Sends `request` on a new connection and resolves with all received once the server closes. */
  exchange(request: string | Uint8Array, ms?: number): Promise<string>;
  /** A `GET /` with `Connection: close` on a new connection; resolves with the response text. */
  probe(path?: string): Promise<string>;
}

/**
 * Serves `handler` on 127.0.0.1 port 0 over `transport`, runs `body`, then destroys every client
 * the harness opened and shuts the server down within 5 s (a failure of that fails the test only
 * when the body passed, so the first error is the one reported).
 */
export async function harness(
  transport: TransportName,
  handler: Handler,
  options: Omit<ServeOptions, "transport" | "port"> & { hostname?: string },
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const server = serve({
    shutdownTimeout: 1000,
    hostname: "127.0.0.1",
    ...options,
    port: 0,
    transport,
  }, handler);
  const addr = await withTimeout(server.ready, 5000, "Server.ready");
  const port = addr.port;
  const peers = new Set<Peer>();
  const track = <P extends Peer>(peer: P): P => {
    peers.add(peer);
    return peer;
  };
  const h: Harness = {
    server,
    port,
    connect: async (connectOptions) => track(await connect(port, connectOptions)),
    connectTls: async (ca) => track(await connectTls(port, ca)),
    track,
    async exchange(request, ms = 3000) {
      const peer = track(await connect(port));
      await peer.tryWrite(request);
      await peer.waitForClose(ms);
      peer.destroy();
      return peer.text();
    },
    probe(path = "/") {
      return h.exchange(`GET ${path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n`);
    },
  };
  let failed = false;
  try {
    await body(h);
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    for (const peer of peers) peer.destroy();
    const shutdown = withTimeout(server.shutdown(), 5000, "Server.shutdown()");
    if (failed) await shutdown.catch(() => {});
    else await shutdown;
  }
}

/** Replaces console.error while `body` runs; returns what was logged, as text lines. */
export async function capturingErrors(body: () => Promise<void>): Promise<string[]> {
  const logged: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => {
    logged.push(
      args.map((arg) => arg instanceof Error ? `${arg.name}: ${arg.message}` : String(arg)).join(
        " ",
      ),
    );
  };
  try {
    await body();
  } finally {
    console.error = original;
  }
  return logged;
}

//#endregion
//#region Responses

/** One parsed response. */
export interface ParsedResponse {
  status: number;
  reason: string;
  /** Field names lower-cased, in order. */
  headers: Array<[string, string]>;
  body: string;
  /** Whether the body was complete (all Content-Length bytes, or the last chunk). */
  complete: boolean;
}

/** The value of the first field called `name` (lower case), or undefined. */
export function field(response: ParsedResponse, name: string): string | undefined {
  return response.headers.find(([n]) => n === name)?.[1];
}

/**
 * Parses the responses in `text`, in order. Bodies: none for 1xx/204/304, chunked, Content-Length,
 * or (neither) up to the end. Stops at the first thing that is not a response.
 */
export function parseResponses(text: string): { responses: ParsedResponse[]; rest: string } {
  const responses: ParsedResponse[] = [];
  let at = 0;
  for (let count = 0; count < 1000 && at < text.length; count++) {
    const headEnd = text.indexOf("\r\n\r\n", at);
    if (headEnd === -1) break;
    const lines = text.slice(at, headEnd).split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]);
    if (!m) break;
    const status = Number(m[1]);
    const headers: Array<[string, string]> = [];
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      headers.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]);
    }
    const response: ParsedResponse = { status, reason: m[2], headers, body: "", complete: true };
    at = headEnd + 4;
    const te = field(response, "transfer-encoding");
    const cl = field(response, "content-length");
    if (status < 200 || status === 204 || status === 304) {
      // no body
    } else if (te !== undefined && /chunked$/i.test(te)) {
      response.complete = false;
      for (let chunks = 0; chunks < 100_000; chunks++) {
        const lineEnd = text.indexOf("\r\n", at);
        if (lineEnd === -1) break;
        const size = parseInt(text.slice(at, lineEnd), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const trailerEnd = text.indexOf("\r\n\r\n", lineEnd);
          if (trailerEnd === -1 && text.slice(lineEnd, lineEnd + 4) !== "\r\n\r\n") break;
          at = (trailerEnd === -1 ? lineEnd : trailerEnd) + 4;
          response.complete = true;
          break;
        }
        if (lineEnd + 2 + size + 2 > text.length) {
          response.body += text.slice(lineEnd + 2, lineEnd + 2 + size);
          at = text.length;
          break;
        }
        response.body += text.slice(lineEnd + 2, lineEnd + 2 + size);
        at = lineEnd + 2 + size + 2;
      }
    } else if (cl !== undefined) {
      const length = Number(cl);
      response.body = text.slice(at, at + length);
      response.complete = response.body.length === length;
      at = Math.min(text.length, at + length);
    } else {
      response.body = text.slice(at);
      at = text.length;
    }
    responses.push(response);
    if (!response.complete) break;
  }
  return { responses, rest: text.slice(at) };
}

//#endregion
//#region Child processes and certificates

/** Runs `command` with `args` (async execFile); resolves with stdout, rejects with stderr. */
export function run(command: string, args: string[], ms = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { encoding: "latin1", timeout: ms },
      (error: Error | null, stdout: string, stderr: string) => {
        if (error) reject(new Error(`${command} failed: ${error.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

/** A PEM certificate and its key. */
export interface CertPair {
  cert: string;
  key: string;
}

let certPromise: Promise<CertPair> | null = null;

/**
 * A throwaway self-signed certificate for `localhost` and 127.0.0.1, valid one day, made with
 * openssl once per run; the files are removed at once, the PEM strings kept in memory.
 */
export function throwawayCert(): Promise<CertPair> {
  certPromise ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "wireserve-cert-"));
    try {
      await run("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ]);
      return {
        cert: await readFile(join(dir, "cert.pem"), "utf8"),
        key: await readFile(join(dir, "key.pem"), "utf8"),
      };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return certPromise;
}

/** Runs curl against the TLS server on `port` as `https://localhost:PORT{path}`, trusting `ca`. */
export async function curlHttps(port: number, ca: string, path: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "wireserve-curl-"));
  try {
    const caFile = join(dir, "cert.pem");
    await writeFile(caFile, ca);
    return await run("curl", [
      "--silent",
      "--show-error",
      "--include",
      "--max-time",
      "10",
      "--cacert",
      caFile,
      "--resolve",
      `localhost:${port}:127.0.0.1`,
      `https://localhost:${port}${path}`,
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The soft limit on open files of this process (children inherit it), or null if unknown. */
export async function openFileLimit(): Promise<number | null> {
  try {
    const out = (await run("sh", ["-c", "ulimit -n"], 5000)).trim();
    if (out === "unlimited") return Number.MAX_SAFE_INTEGER;
    const n = Number(out);
    return Number.isFinite(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

//#endregion
//#region Randomness

/** mulberry32: a small seeded PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

//#endregion
