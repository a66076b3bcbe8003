/**
 * Helpers for layers 2 and 3 of the test suite: the connection driver over an in-memory
 * connection, and the server end to end over real sockets on 127.0.0.1.
 *
 * - time: `delay`, `withTimeout`, `settle`, `waitUntil`, `gate`; every wait is bounded in count
 *   and in time, so a broken server fails a test instead of hanging the run;
 * - bytes: `bytesOf` and `textOf` (one byte per code unit, as the wire has it), `maskDate`;
 * - expected responses: `ok`, `okHead`, `errorResponse`, `BAD_REQUEST`, written out as the driver
 *   serializes them, and `echoUrl`, the handler most tests use;
 * - `MemoryConnection` and `memoryServer`: a custom `Transport` whose connections record every call
 *   the driver makes, so tests can assert the exact bytes written;
 * - `RawClient` and `rawExchange`: a `node:net` client that sends raw bytes and collects raw bytes;
 * - `transportsHere`: the built-in transports this runtime can run;
 * - `runCurl`: curl through `node:child_process`.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as net from "node:net";
import { execFile } from "node:child_process";
import { serve } from "../mod.ts";
import type {
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

//#endregion
//#region Expected responses

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

/** Replaces console.error while `body` runs, and returns what was logged. */
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
 * Runs `body` against a server, then shuts the server down within 2 s. A shutdown failure fails
 * the test only when the test itself passed, so the first error is the one reported.
 */
export async function withServer<T extends { server: Server }>(
  started: T,
  body: (started: T) => Promise<void>,
): Promise<void> {
  let failed = false;
  try {
    await body(started);
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    const shutdown = withTimeout(started.server.shutdown(), 2000, "Server.shutdown()");
    if (failed) await shutdown.catch(() => {});
    else await shutdown;
  }
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
//#region Real sockets

/** The built-in transports this runtime can run: its own, and node:net everywhere. */
export function transportsHere(): TransportName[] {
  const runtime = globalThis as { Bun?: unknown; Deno?: unknown };
  if (runtime.Bun !== undefined) return ["bun", "node"];
  if (runtime.Deno !== undefined) return ["deno", "node"];
  return ["node"];
}

/** Serves `handler` on 127.0.0.1, a free port, over `transport`; resolves once listening. */
export async function listen(
  transport: TransportName,
  handler: Handler,
  options: Omit<ServeOptions, "transport" | "port" | "hostname"> = {},
): Promise<{ server: Server; port: number; addr: NetAddr }> {
  const server = serve({ ...options, port: 0, hostname: "127.0.0.1", transport }, handler);
  const addr = await withTimeout(server.ready, 3000, "Server.ready");
  return { server, port: addr.port, addr };
}

/** A raw TCP client: writes bytes, collects whatever the server sends, sees the server close. */
export class RawClient {
  readonly socket: net.Socket;
  readonly chunks: Uint8Array[] = [];
  bytesReceived = 0;
  /** The server half-closed (FIN). */
  ended = false;
  /** The socket is closed, by either side. */
  closed = false;
  error: Error | null = null;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.chunks.push(new Uint8Array(chunk));
      this.bytesReceived += chunk.length;
    });
    socket.on("end", () => this.ended = true);
    socket.on("close", () => this.closed = true);
    socket.on("error", (error: Error) => this.error = error);
  }

  /** Connects to `port` on 127.0.0.1 with Nagle off. */
  static async connect(port: number, hostname = "127.0.0.1"): Promise<RawClient> {
    const socket = net.connect({ port, host: hostname });
    const client = new RawClient(socket);
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      }),
      3000,
      `a connection to ${hostname}:${port}`,
    );
    socket.setNoDelay(true);
    return client;
  }

  /** Writes bytes (a string is written as latin1). */
  write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? bytesOf(data) : data;
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (error?: Error | null) => error ? reject(error) : resolve());
    });
  }

  /** Everything received, decoded as latin1, with the Date values masked. */
  text(): string {
    return maskDate(textOf(this.chunks));
  }

  /** Waits until the received text satisfies `predicate`. */
  async waitForText(predicate: (text: string) => boolean, what: string, ms = 3000): Promise<void> {
    await waitUntil(
      () => predicate(this.text()),
      `${what}; received ${this.bytesReceived} bytes`,
      ms,
    );
  }

  /** Waits until the server closes its side (or the socket closes). */
  async waitForEnd(ms = 3000): Promise<void> {
    await waitUntil(() => this.ended || this.closed, "the server to close the connection", ms);
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }
}

/** Sends `request` on a new connection, reads until the server closes it, returns what came. */
export async function rawExchange(port: number, request: string, ms = 3000): Promise<string> {
  const client = await RawClient.connect(port);
  try {
    await client.write(request);
    await client.waitForEnd(ms);
    return client.text();
  } finally {
    client.destroy();
  }
}

/** Runs curl with `args`; resolves with its stdout as latin1 text. */
export function runCurl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "curl",
      args,
      { encoding: "latin1", timeout: 10_000 },
      (error: Error | null, stdout: string, stderr: string) => {
        if (error) reject(new Error(`curl failed: ${error.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

//#endregion
