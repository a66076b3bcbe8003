/**
 * The test suite's helpers, one module for every layer's tests:
 *
 * - time: `delay`, `withTimeout`, `settle`, `waitUntil`, `gate`; every wait is bounded in count
 *   and in time, so a broken server fails a test instead of hanging the run;
 * - bytes: `bytesOf` and `textOf` (one byte per code unit, as the wire has it), `maskDate`, `show`;
 * - responses: `textResponse`, `slowStream`, the handler `echoUrl`, the exact bytes the driver
 *   writes (`ok`, `okHead`, `errorResponse`, `BAD_REQUEST`), and `parseResponses` / `field`, a
 *   small HTTP/1.1 response parser for what a raw client received;
 * - logging: `capturingErrors` and `logLines`;
 * - servers: `runtimeName`, `transportsHere`, `listen` (127.0.0.1, a free port), `withServer`, and
 *   `nativeServe` (Deno.serve or Bun.serve, where the runtime has one)
 *   (a bounded shutdown when the test ends);
 * - `MemoryConnection` and `memoryServer`: a custom `Transport` whose connections record every call
 *   the driver makes, so tests can assert the exact bytes written;
 * - `RawClient` (plain or TLS), `rawExchange` and `harness`: `node:net` / `node:tls` clients that
 *   send raw bytes, record every byte and when the server closed, and are destroyed with the server
 *   when a test ends;
 * - child processes: `startProcess` (a program with a bounded lifetime), `runCommand` (async
 *   `execFile`), `throwawayCert`, `curlHttps`, `openFileLimit`;
 * - `mulberry32`: a seeded PRNG for the fuzz test.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as net from "node:net";
import * as tls from "node:tls";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { serve } from "../mod.ts";
import type {
  Clock,
  ConnectionEvents,
  Handler,
  NetAddr,
  ServeOptions,
  Server,
  Transport,
  TransportConnection,
  TransportName,
} from "../mod.ts";

//#region Time

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with a message naming `what` if `promise` takes longer than `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `predicate` until it holds or `ms` pass; returns whether it held. For waits whose failure
 * the following assertion reports better than a timeout message would (an exact-bytes diff).
 */
export async function settle(predicate: () => boolean, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (let round = 0; round < 100_000; round++) {
    if (predicate()) return true;
    if (Date.now() >= deadline) return false;
    await delay(round < 20 ? 0 : 2);
  }
  return predicate();
}

/** Polls `predicate` until it holds; throws naming `what` after `ms`. */
export async function waitUntil(predicate: () => boolean, what: string, ms = 3000): Promise<void> {
  if (!await settle(predicate, ms)) {
    throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
  }
}

/** A promise the test opens by hand: `await g.opened` in a handler, `g.open()` in the test. */
export interface Gate {
  readonly opened: Promise<void>;
  readonly isOpen: boolean;
  open(): void;
}

/** Makes a {@linkcode Gate}. */
export function gate(): Gate {
  let resolve!: () => void;
  const opened = new Promise<void>((r) => resolve = r);
  let isOpen = false;
  return {
    opened,
    get isOpen() {
      return isOpen;
    },
    open() {
      isOpen = true;
      resolve();
    },
  };
}

//#endregion
//#region Bytes

/** Encodes a string with one byte per code unit (latin1); every code unit must be below 0x100. */
export function bytesOf(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff) throw new RangeError(`Cannot encode as latin1: code unit ${code} at ${i}`);
    bytes[i] = code;
  }
  return bytes;
}

/** Decodes bytes one code unit per byte (latin1), the inverse of {@linkcode bytesOf}. */
export function textOf(chunks: Uint8Array | readonly Uint8Array[]): string {
  const list = chunks instanceof Uint8Array ? [chunks] : chunks;
  let text = "";
  for (const chunk of list) {
    for (let i = 0; i < chunk.length; i += 4096) {
      text += String.fromCharCode(...chunk.subarray(i, i + 4096));
    }
  }
  return text;
}

/** Replaces every Date value, which changes each second, with `X`. */
export function maskDate(text: string): string {
  return text.replace(/date: [^\r]+/g, "date: X");
}

/** A printable form of raw bytes for test names and messages. */
export function show(text: string, max = 160): string {
  const shown = JSON.stringify(text.length > max ? text.slice(0, max) + "…" : text);
  return shown.slice(1, -1);
}

//#endregion
//#region Responses

/** The exact bytes of the error response the server answers a protocol violation with. */
export function errorResponse(status: number, reason: string): string {
  const body = `${status} ${reason}\n`;
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
    `date: X\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;
}

/** A response with an explicit content-type (Bun's `new Response("")` has none, unlike Deno's). */
export function textResponse(body: BodyInit | null, init: ResponseInit = {}): Response {
  const headers = new Headers(init.headers);
  if (!headers.has("content-type")) headers.set("content-type", "text/plain");
  return new Response(body, { ...init, headers });
}

/** A stream that yields `pieces` one by one, each after `ms` milliseconds. */
export function slowStream(pieces: readonly string[], ms = 5): ReadableStream<Uint8Array> {
  let next = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      await delay(ms);
      if (next < pieces.length) controller.enqueue(bytesOf(pieces[next++]));
      else controller.close();
    },
  }, { highWaterMark: 0 });
}

/** The handler most driver tests use: says which method and URL it saw, as text/plain. */
export const echoUrl: Handler = (request) => textResponse(`${request.method} ${request.url}`);

/** A 200 text/plain response head with a length, as the driver writes it. */
export function okHead(length: number, extra = ""): string {
  return `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\ncontent-length: ${length}\r\n${extra}\r\n`;
}

/** A complete 200 text/plain response with a length-framed body. */
export function ok(body: string, extra = ""): string {
  return okHead(body.length, extra) + body;
}

/** The exact answer to a protocol violation with status 400. */
export const BAD_REQUEST =
  "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ndate: X\r\ncontent-length: 16\r\nconnection: close\r\n\r\n400 Bad Request\n";

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
//#region Logging

/** Replaces console.error while `body` runs, and returns the arguments of each call. */
export async function capturingErrors(body: () => Promise<void>): Promise<unknown[][]> {
  const logged: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => {
    logged.push(args);
  };
  try {
    await body();
  } finally {
    console.error = original;
  }
  return logged;
}

/** Each call {@linkcode capturingErrors} caught as one line; an Error as `name: message`. */
export function logLines(logged: readonly unknown[][]): string[] {
  return logged.map((args) =>
    args.map((arg) => arg instanceof Error ? `${arg.name}: ${arg.message}` : String(arg)).join(" ")
  );
}

//#endregion
//#region Servers

/** The name of this runtime. */
export function runtimeName(): "deno" | "bun" | "node" {
  const runtime = globalThis as { Bun?: unknown; Deno?: unknown };
  return runtime.Bun !== undefined ? "bun" : runtime.Deno !== undefined ? "deno" : "node";
}

/** The built-in transports this runtime can run: its own, and node:net everywhere. */
export function transportsHere(): TransportName[] {
  const runtime = runtimeName();
  return runtime === "node" ? ["node"] : [runtime, "node"];
}

/**
 * Serves `handler` on a free port over `transport` (on 127.0.0.1 unless `options.hostname` says
 * otherwise); resolves once listening.
 */
export async function listen(
  transport: TransportName,
  handler: Handler,
  options: Omit<ServeOptions, "transport" | "port"> = {},
): Promise<{ server: Server; port: number; addr: NetAddr }> {
  const server = serve({ hostname: "127.0.0.1", ...options, port: 0, transport }, handler);
  const addr = await withTimeout(server.ready, 5000, "Server.ready");
  return { server, port: addr.port, addr };
}

/** What {@linkcode withServer} does after the body, besides shutting the server down. */
export interface WithServerOptions {
  /** How long the shutdown may take. @default 2000 */
  shutdownMs?: number;
  /** Runs before the shutdown, whether the body passed or not (say, to destroy clients). */
  cleanup?: () => void;
}

/**
 * Runs `body` against a server, then shuts the server down within `shutdownMs`. A shutdown failure
 * fails the test only when the test itself passed, so the first error is the one reported.
 */
export async function withServer<T extends { server: Server }>(
  started: T,
  body: (started: T) => Promise<void>,
  options: WithServerOptions = {},
): Promise<void> {
  let failed = false;
  try {
    await body(started);
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    options.cleanup?.();
    const ms = options.shutdownMs ?? 2000;
    const shutdown = withTimeout(started.server.shutdown(), ms, "Server.shutdown()");
    if (failed) await shutdown.catch(() => {});
    else await shutdown;
  }
}

//#endregion
//#region In-memory transport

const MEMORY_LOCAL: NetAddr = { hostname: "127.0.0.1", port: 8080, transport: "tcp" };
const MEMORY_REMOTE: NetAddr = { hostname: "192.0.2.7", port: 40000, transport: "tcp" };

/**
 * One in-memory connection: the test pushes bytes with `send`, `sendBytes` and `sendEnd`; every
 * call of the driver is recorded. `end()` and `destroy()` are followed by `onClose` a microtask
 * later, as a real adapter does once the socket is gone.
 */
export class MemoryConnection implements TransportConnection {
  readonly remoteAddr: NetAddr = MEMORY_REMOTE;
  readonly localAddr: NetAddr = MEMORY_LOCAL;
  readonly secure: boolean = false;
  events: ConnectionEvents | null = null;
  /** Every byte array passed to `write`, copied. */
  readonly writes: Uint8Array[] = [];
  /** What `write` returns: false simulates a client that does not read. */
  writeResult = true;
  /** Writes made after `end()` or `destroy()`: a driver bug if ever non-zero. */
  writesAfterClose = 0;
  endCount = 0;
  destroyCount = 0;
  pauseCount = 0;
  resumeCount = 0;
  paused = false;
  closed = false;
  #closing = false;

  /** Whether the driver called `end()`. */
  get ended(): boolean {
    return this.endCount > 0;
  }

  /** Whether the driver called `destroy()`. */
  get destroyed(): boolean {
    return this.destroyCount > 0;
  }

  write(bytes: Uint8Array): boolean {
    if (this.#closing) this.writesAfterClose++;
    this.writes.push(bytes.slice());
    return this.writeResult;
  }

  pause(): void {
    this.pauseCount++;
    this.paused = true;
  }

  resume(): void {
    this.resumeCount++;
    this.paused = false;
  }

  /** The `linger` argument of the last `end()` call (true when not given). */
  lingered: boolean | null = null;

  end(linger = true): void {
    this.endCount++;
    this.lingered = linger;
    this.#closeSoon();
  }

  destroy(): void {
    this.destroyCount++;
    this.#closeSoon();
  }

  #closeSoon(): void {
    if (this.#closing) return;
    this.#closing = true;
    queueMicrotask(() => {
      this.closed = true;
      this.events?.onClose();
    });
  }

  /** Delivers bytes written as a latin1 string, as the socket would. */
  send(text: string): void {
    this.sendBytes(bytesOf(text));
  }

  /** Delivers bytes, as the socket would. */
  sendBytes(bytes: Uint8Array): void {
    assert.ok(this.events, "the connection was not accepted");
    this.events.onData(bytes);
  }

  /** The client half-closes. */
  sendEnd(): void {
    assert.ok(this.events, "the connection was not accepted");
    this.events.onEnd();
  }

  /** Everything written, decoded as latin1, with the Date value masked. */
  output(): string {
    return maskDate(textOf(this.writes));
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    let total = 0;
    for (const bytes of this.writes) total += bytes.length;
    return total;
  }
}

/**
 * A clock the test moves by hand: `advance` sets the time forward and runs the server's sweep,
 * so timeouts fire exactly when the test says, with no real waiting.
 */
export class ManualClock implements Clock {
  time = 1_800_000_000_000;
  readonly #ticks = new Set<() => void>();

  now(): number {
    return this.time;
  }

  every(_milliseconds: number, tick: () => void): () => void {
    this.#ticks.add(tick);
    return () => this.#ticks.delete(tick);
  }

  /** Moves the time forward and runs every sweep once. */
  advance(milliseconds: number): void {
    this.time += milliseconds;
    for (const tick of this.#ticks) tick();
  }
}

/** A server over the in-memory transport, and a way to open connections to it. */
export interface MemoryServer {
  readonly server: Server;
  /** Opens a connection (a new one by default), as the transport would when a client connects. */
  connect(connection?: MemoryConnection): MemoryConnection;
}

/** Serves `handler` over an in-memory transport (a custom {@linkcode Transport}). */
export function memoryServer(
  handler: Handler,
  options: Omit<ServeOptions, "transport"> = {},
): MemoryServer {
  let accept: ((connection: TransportConnection) => ConnectionEvents) | null = null;
  const transport: Transport = (_listen, acceptConnection) => {
    accept = acceptConnection;
    return { addr: MEMORY_LOCAL, close() {} };
  };
  const server = serve({ port: 0, hostname: "127.0.0.1", ...options, transport }, handler);
  return {
    server,
    connect(connection = new MemoryConnection()): MemoryConnection {
      assert.ok(accept, "the transport was not started");
      connection.events = accept(connection);
      return connection;
    },
  };
}

/**
 * Waits until `connection` has written at least as much as `expected` (and ended, if `ended` says
 * so), lets a few more turns pass so that stray bytes would show, then asserts the exact output
 * (Date masked) and whether the driver ended the connection.
 */
export async function expectOutput(
  connection: MemoryConnection,
  expected: string,
  ended: boolean,
): Promise<void> {
  await settle(() =>
    connection.output().length >= expected.length && (!ended || connection.ended) ||
    connection.output().length > expected.length
  );
  await delay(5);
  assert.equal(connection.output(), expected);
  assert.equal(
    connection.ended,
    ended,
    ended ? "the driver should end the connection" : "the driver should keep the connection open",
  );
  assert.equal(connection.writesAfterClose, 0, "the driver wrote after end() or destroy()");
}

//#endregion
//#region Raw clients

/** Options for {@linkcode RawClient.connect}. */
export interface ConnectOptions {
  /** The address to connect to. @default "127.0.0.1" */
  host?: string;
  /** The local address to connect from. */
  localAddress?: string;
  /** How long connecting may take. @default 5000 */
  ms?: number;
}

/**
 * A raw client socket (`node:net` or `node:tls`): writes bytes, records every byte the server sends
 * and when the server closed.
 */
export class RawClient {
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

  /** Connects a plain TCP client to `port` (on 127.0.0.1 by default) with Nagle off. */
  static async connect(port: number, options: ConnectOptions = {}): Promise<RawClient> {
    const host = options.host ?? "127.0.0.1";
    const socket = net.connect({ port, host, localAddress: options.localAddress });
    const client = new RawClient(socket);
    await opened(socket, "connect", options.ms ?? 5000, `a connection to ${host}:${port}`);
    socket.setNoDelay(true);
    return client;
  }

  /** Connects a TLS client to `port` on 127.0.0.1, trusting `ca`, offering http/1.1. */
  static async connectTls(port: number, ca: string): Promise<RawClient & { alpn: string }> {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      ca,
      servername: "localhost",
      ALPNProtocols: ["http/1.1"],
    });
    const client = new RawClient(socket) as RawClient & { alpn: string };
    await opened(socket, "secureConnect", 5000, `a TLS connection to 127.0.0.1:${port}`);
    client.alpn = String(socket.alpnProtocol);
    return client;
  }

  /** Whether the server closed its side or the socket is gone. */
  get done(): boolean {
    return this.ended || this.closed;
  }

  /** Everything received so far, decoded as latin1, with the Date values masked. */
  text(): string {
    if (this.#textChunks !== this.chunks.length) {
      this.#text = maskDate(textOf(this.chunks));
      this.#textChunks = this.chunks.length;
    }
    return this.#text;
  }

  /** Writes bytes (a string as latin1); resolves once handed to the kernel, rejects on error. */
  write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? bytesOf(data) : data;
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
      `${what}; received ${this.bytesReceived} bytes: ${show(this.text())}`,
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

/** Waits for `socket` to emit `event`; destroys it and rejects on an error, a close or after `ms`. */
async function opened(socket: net.Socket, event: string, ms: number, what: string): Promise<void> {
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once(event, resolve);
        socket.once("error", reject);
        socket.once("close", () => reject(new Error(`closed before ${event}`)));
      }),
      ms,
      what,
    );
  } catch (error) {
    socket.destroy();
    throw error;
  }
}

/** Sends `request` on `client`, waits until the server closes, destroys it, returns what came. */
async function exchangeOn(
  client: RawClient,
  request: string | Uint8Array,
  ms: number,
): Promise<string> {
  try {
    await client.tryWrite(request);
    await client.waitForClose(ms);
    return client.text();
  } finally {
    client.destroy();
  }
}

/** Sends `request` on a new connection, reads until the server closes it, returns what came. */
export async function rawExchange(
  port: number,
  request: string | Uint8Array,
  ms = 3000,
): Promise<string> {
  return exchangeOn(await RawClient.connect(port), request, ms);
}

/** What a test body gets from {@linkcode harness}. */
export interface Harness {
  readonly server: Server;
  readonly port: number;
  /** Connects a TCP client that is destroyed when the test ends. */
  connect(options?: ConnectOptions): Promise<RawClient>;
  /** Connects a TLS client that is destroyed when the test ends. */
  connectTls(ca: string): Promise<RawClient & { alpn: string }>;
  /** Tracks a client made elsewhere so that it is destroyed when the test ends. */
  track(client: RawClient): RawClient;
  /** Sends `request` on a new connection and resolves with all received once the server closes. */
  exchange(request: string | Uint8Array, ms?: number): Promise<string>;
  /** A `GET /` with `Connection: close` on a new connection; resolves with the response text. */
  probe(path?: string): Promise<string>;
}

/**
 * Serves `handler` on 127.0.0.1 port 0 over `transport`, runs `body`, then destroys every client
 * the harness opened and shuts the server down within 5 s (see {@linkcode withServer}).
 */
export async function harness(
  transport: TransportName,
  handler: Handler,
  options: Omit<ServeOptions, "transport" | "port">,
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const started = await listen(transport, handler, { shutdownTimeout: 1000, ...options });
  const { server, port } = started;
  const clients = new Set<RawClient>();
  const track = <C extends RawClient>(client: C): C => {
    clients.add(client);
    return client;
  };
  const h: Harness = {
    server,
    port,
    connect: async (connectOptions) => track(await RawClient.connect(port, connectOptions)),
    connectTls: async (ca) => track(await RawClient.connectTls(port, ca)),
    track,
    exchange: async (request, ms = 3000) =>
      exchangeOn(track(await RawClient.connect(port)), request, ms),
    probe(path = "/") {
      return h.exchange(`GET ${path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n`);
    },
  };
  await withServer(started, () => body(h), {
    shutdownMs: 5000,
    cleanup() {
      for (const client of clients) client.destroy();
    },
  });
}

//#endregion
//#region Child processes and certificates

/** How a process started by {@linkcode startProcess} ended. */
export interface ProcessExit {
  stdout: string;
  stderr: string;
  /** The exit code, or null when a signal ended it. */
  code: number | null;
  signal: string | null;
  /** Set when it could not be started at all. */
  error: Error | null;
  /** Whether it was killed by the time limit (rather than by `kill()` or on its own). */
  timedOut: boolean;
  ms: number;
}

/** A process started by {@linkcode startProcess}. */
export interface RunningProcess {
  /** What it printed to stdout so far (UTF-8; the first MiB). */
  readonly stdout: string;
  /** What it printed to stderr so far (UTF-8; the first MiB). */
  readonly stderr: string;
  /** Resolves when it has exited, however; never rejects. */
  readonly exited: Promise<ProcessExit>;
  /** Sends `signal` (SIGKILL by default) to it, or to its whole group when started `detached`. */
  kill(signal?: "SIGTERM" | "SIGKILL"): void;
}

/** Output kept from a started process, per stream; the rest is dropped. */
const MAX_PROCESS_OUTPUT = 1024 * 1024;

/**
 * Starts `binary` with `args`, asynchronously, and kills it after `ms` (with SIGKILL). With
 * `detached`, it leads a process group of its own, and the whole group is killed after `ms` (and
 * once more when it has exited, for any helper left behind): for programs that start others, like
 * Chromium.
 *
 * `spawn` rather than `execFile`: both are asynchronous, but `execFile` does not pass `detached`
 * on (on Node, Deno or Bun), and its output arrives only at the end.
 */
export function startProcess(
  binary: string,
  args: string[],
  options: { ms: number; detached?: boolean; env?: Record<string, string | undefined> },
): RunningProcess {
  const started = Date.now();
  const detached = options.detached ?? false;
  let timedOut = false;
  const output = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const kept = { stdout: 0, stderr: 0 };
  const child = spawn(binary, args, {
    detached,
    env: options.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let settled = false;
  // `process.kill(pid)` rather than `child.kill()`: after `child.kill("SIGTERM")`, Deno's
  // node:child_process reports the exit as `signal: "SIGTERM"` even when the program handled the
  // signal and exited with code 0 (Deno 2.9); the code the test wants to see is then lost.
  const kill = (signal: "SIGTERM" | "SIGKILL" = "SIGKILL") => {
    if (settled || child.pid === undefined) return; // gone: its pid may be someone else's now
    signalProcess(detached ? -child.pid : child.pid, signal, () => child.kill(signal));
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, options.ms);
  for (const stream of ["stdout", "stderr"] as const) {
    child[stream]?.on("data", (chunk: Buffer) => {
      if (kept[stream] < MAX_PROCESS_OUTPUT) output[stream].push(chunk);
      kept[stream] += chunk.length;
    });
  }
  const text = (stream: "stdout" | "stderr") => Buffer.concat(output[stream]).toString("utf8");
  const exited = new Promise<ProcessExit>((resolve) => {
    const finish = (code: number | null, signal: string | null, error: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Any helper the group leader left behind.
      if (detached && child.pid !== undefined) signalProcess(-child.pid, "SIGKILL", () => {});
      resolve({
        stdout: text("stdout"),
        stderr: text("stderr"),
        code,
        signal,
        error,
        timedOut,
        ms: Date.now() - started,
      });
    };
    child.on("error", (error) => finish(null, null, error));
    child.on("close", (code, signal) => finish(code, signal, null));
  });
  return {
    get stdout() {
      return text("stdout");
    },
    get stderr() {
      return text("stderr");
    },
    exited,
    kill,
  };
}

/** Sends `signal` to `pid` (a negative one: its process group); falls back to `fallback`. */
function signalProcess(pid: number, signal: string, fallback: () => void): void {
  try {
    process.kill(pid, signal);
  } catch {
    try {
      fallback();
    } catch {
      // already gone
    }
  }
}

/** Runs `command` with `args` (async execFile); resolves with stdout, rejects with stderr. */
export function runCommand(command: string, args: string[], ms = 15_000): Promise<string> {
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
      await runCommand("openssl", [
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
    return await runCommand("curl", [
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
    const out = (await runCommand("sh", ["-c", "ulimit -n"], 5000)).trim();
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
//#region Ports

/**
 * A TCP port that was free a moment ago, for a program that must be told its port before it
 * binds (HAProxy, nginx, a worker pool): bound on 127.0.0.1 port 0, then closed. Another process
 * could take it between the close and the program's bind; on a test machine that race is rare,
 * and accepted: it fails the test with "address in use", never passes one wrongly.
 */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: "127.0.0.1", port: 0 }, resolve);
    }),
    5000,
    "a free port",
  );
  const { port } = server.address() as net.AddressInfo;
  await withTimeout(new Promise<void>((resolve) => server.close(() => resolve())), 5000, "close");
  return port;
}

//#endregion

/** The runtime's own fetch server, where it has one (Node's node:http takes no fetch handler). */
export type NativeServe = (
  handler: (request: Request) => Response | Promise<Response>,
) => Promise<{ port: number; close: () => Promise<void> }>;

export function nativeServe(): NativeServe | null {
  const runtime = globalThis as unknown as {
    Deno?: {
      serve(
        options: { port: number; hostname: string; onListen?: () => void },
        handler: (request: Request) => Response | Promise<Response>,
      ): { addr: { port: number }; shutdown(): Promise<void> };
    };
    Bun?: {
      serve(
        options: {
          port: number;
          hostname: string;
          fetch: (request: Request) => Response | Promise<Response>;
        },
      ): {
        port: number;
        stop(force?: boolean): Promise<void> | void;
      };
    };
  };
  const name = runtimeName();
  if (name === "deno") {
    return (handler) => {
      const server = runtime.Deno!.serve(
        { port: 0, hostname: "127.0.0.1", onListen() {} },
        handler,
      );
      return Promise.resolve({ port: server.addr.port, close: () => server.shutdown() });
    };
  }
  if (name === "bun") {
    return (handler) => {
      const server = runtime.Bun!.serve({ port: 0, hostname: "127.0.0.1", fetch: handler });
      return Promise.resolve({ port: server.port, close: async () => await server.stop(true) });
    };
  }
  return null;
}
