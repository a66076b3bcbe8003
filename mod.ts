/**
 * wireserve: a strict HTTP/1.1 server on raw TCP, in one file, for Deno, Bun and Node.
 *
 * ```ts
 * import { serve } from "jsr:@wireserve/wireserve";
 *
 * const server = serve({ port: 0, hostname: "127.0.0.1" }, (request, info) =>
 *   new Response(`hello ${info.remoteAddr.hostname}, you asked for ${new URL(request.url).pathname}`));
 * const addr = await server.ready;
 * console.log(`listening on http://${addr.hostname}:${addr.port}/`);
 * await server.shutdown();
 * ```
 *
 * How bytes flow through this file, top to bottom:
 *
 * ```
 * socket bytes ─► transport adapter ─► findHeadEnd · parseRequestHead · requestFraming (pure)
 *   ─► body decoding (Content-Length / ChunkedDecoder) ─► Request ─► handler ─► Response
 *   ─► responseFraming · serializeResponseHead · encodeChunk (pure) ─► transport adapter ─► socket
 * ```
 *
 * The protocol core follows RFC 9112 (HTTP/1.1 message syntax) and RFC 9110 (HTTP semantics). It is
 * deliberately strict: no bare LF line endings, no obs-fold, no whitespace before a colon, no
 * `Transfer-Encoding` together with `Content-Length`, no duplicate `Content-Length`, no HTTP/0.9.
 * Each violation is answered with its precise status and the connection is closed, so nothing can be
 * smuggled behind it. Every limit and timeout is finite by default.
 *
 * The file, in the order data flows through it (each `//#region` uses only what stands above it,
 * save the adapters, which the driver reaches through the transport contract):
 *
 * | region | what it holds |
 * |---|---|
 * | Public types | `NetAddr`, `UnixAddr`, `ConnInfo`, `Handler`, `Limits`, `Timeouts`, `RequestHead`, `Framing` |
 * | Constants and tables | byte tables, status texts, the runtime profile (what differs per runtime) |
 * | Errors | `HttpError` and its codes, each with the status it answers |
 * | Parse: request heads | `findHeadEnd`, `parseRequestHead`, `requestFraming`, `HeadReader`, `effectiveRequestUrl`, `shouldKeepAlive` |
 * | Parse: chunked bodies | `ChunkedDecoder` |
 * | Serialize: responses | `responseFraming`, `headContentLength`, `serializeResponseHead`, `encodeChunk` |
 * | FastResponse | a `Response` whose string or bytes body is written without a stream |
 * | Client address and access log | `clientAddress` behind trusted proxies; `formatAccessLogEntry`, the batched log writer |
 * | PROXY protocol | `parseProxyHeader` (versions 1 and 2, TLVs, CRC32c), strict IP address text, CIDR matching |
 * | Transport contract | `TransportConnection`, `ConnectionEvents`, `Transport`, the rules both sides keep |
 * | Connection driver | the state machine of one connection (its theory of operation heads it), `switchProtocols`, `sendEarlyHints` |
 * | WebSocket | RFC 6455 and permessage-deflate on the switch seam: the frame reader and writer, `upgradeWebSocket`, `ServerWebSocket` |
 * | Transport adapters | `Deno.listen`, `Bun.listen`, `node:net`: TCP, Unix sockets, `reusePort`, TLS (at accept, or after a PROXY header) |
 * | serve() | options, the PROXY protocol gate, the sweep that checks deadlines, caps, Unix socket files, shutdown |
 * | Workers | `startWorkers`: worker threads sharing a port, restarted with a back-off, stopped together |
 * | Router | `Router`: method and path patterns, 404 / 405 |
 * | HTTP semantics | RFC 9110 code that is not about files: ranges, dates, entity tags, preconditions, negotiation, content types, request paths |
 * | Static files | the file adapters (one per runtime), `serveFile`, `serveDir` |
 * | Compression | `compress`: gzip, brotli and zstd for any fetch handler, streaming with flushes |
 * | Rate limiting | `rateLimit` |
 * | CLI | flags, the demo site |
 *
 * Where to open for a change:
 * - a new limit: `Limits` (public types) and `resolveLimits`, checked in the core where the bytes
 *   are parsed, never in the driver;
 * - a new status error: an `HttpError` code in Errors, thrown from the core;
 * - a new timeout: `Timeouts`, one deadline field on the driver's part that waits (the connection
 *   for its own states), armed and cleared by the transitions its theory-of-operation table
 *   names, and checked in `checkTimers`;
 * - a new transport: implement the transport contract (its rules are at the top of that region)
 *   and pass it as `transport`; a new built-in one goes in Transport adapters and `transports`;
 * - a runtime difference: the runtime profile table, or an adapter; nowhere else;
 * - a protocol upgrade (WebSocket, h2c): a `ProtocolHandler` behind `switchProtocols`;
 * - a middleware: a function from handler to handler on the fetch API, beside Router (as
 *   `compress` and `rateLimit` are);
 * - something the handler does to its connection besides answering (interim responses): a method
 *   of `Exchange` reached through the request's `EXCHANGE` key, as `sendEarlyHints` does;
 * - a new access log field: `AccessLogEntry`, `ExchangeRecord` (filled where the driver knows it),
 *   and `formatAccessLogEntry`;
 * - a CLI flag: `parseArguments` and `USAGE` in CLI;
 * - something a load balancer tells about a connection before its HTTP: the PROXY protocol region
 *   (pure) and `ProxyProtocolGate` in serve(), which hands on a `ProxiedConnection`.
 *
 * Not here yet: HTTP/2.
 *
 * Run it as a program to serve the demo site, or a directory: `deno run -A mod.ts [DIR]`,
 * `bun mod.ts [DIR]` or `node mod.ts [DIR]`.
 *
 * @module
 */

import * as nodeNet from "node:net";
import * as nodeTls from "node:tls";
import { createHash } from "node:crypto";
import { lstatSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { setImmediate } from "node:timers";
import * as nodeDns from "node:dns/promises";
import * as nodeFs from "node:fs/promises";
import * as nodeZlib from "node:zlib";
import nodeProcess from "node:process";
import * as nodeOs from "node:os";
import * as nodeUrl from "node:url";
import * as nodeWorkers from "node:worker_threads";

//#region Public types

/** A TCP address: the listening address of a server or the peer of a connection. */
export interface NetAddr {
  /** The IP address, e.g. `"127.0.0.1"` or `"::1"`. */
  hostname: string;
  /** The TCP port. */
  port: number;
  /** Always `"tcp"`. */
  transport: "tcp";
}

/** A Unix domain socket address, as `Deno.UnixAddr` is. */
export interface UnixAddr {
  /** The socket file's path; `""` for a client's end, which has none. */
  path: string;
  /** Always `"unix"`. */
  transport: "unix";
}

/** Any address a wireserve connection can have. */
export type Addr = NetAddr | UnixAddr;

/**
 * What a handler learns about the connection a request arrived on. The addresses are TCP ones
 * (`NetAddr`) by default; a server on a Unix socket (`serve({ path })`) passes `ConnInfo<Addr>`,
 * whose addresses are `UnixAddr` unless a PROXY protocol header named a TCP client.
 *
 * @typeParam A The type of the addresses.
 */
export interface ConnInfo<A extends Addr = NetAddr> {
  /** The address of the client. */
  readonly remoteAddr: A;
  /** The local address the client connected to. */
  readonly localAddr: A;
  /** Whether the connection is encrypted (TLS). */
  readonly secure: boolean;
  /**
   * Set when the connection came through a load balancer that speaks the PROXY protocol (the
   * `proxyProtocol` option): the header it sent, and the balancer's own address. `remoteAddr` and
   * `localAddr` are then the client's, from the header.
   */
  readonly proxy?: ProxyInfo;
}

/** What a PROXY protocol header told the server about a connection: {@linkcode ConnInfo.proxy}. */
export interface ProxyInfo {
  /** The peer that sent the header: the load balancer. */
  readonly peer: Addr;
  /** The header, as {@linkcode parseProxyHeader} read it: addresses, TLVs, the client's TLS. */
  readonly header: ProxyProtocolHeader;
}

/**
 * A request handler, the same shape as `Deno.serve`'s and `Bun.serve`'s `fetch`.
 *
 * @typeParam Info What the server passes as the second argument.
 */
export type Handler<Info extends ConnInfo<Addr> = ConnInfo> = (
  request: Request,
  info: Info,
) => Response | Promise<Response>;

/** The size limits the parser and the connection driver enforce. Every limit is finite. */
export interface Limits {
  /**
   * Bytes in a request head: request line, header fields and the final empty line. Over it: 431.
   * Node's default maximum header size is also 16 KiB.
   * @default {16384}
   */
  maxHeadBytes: number;
  /**
   * Header fields in a request head (and trailer fields in a chunked body). Over it: 431.
   * @default {100}
   */
  maxHeaderCount: number;
  /**
   * Bytes in the request-target. Over it: 414.
   * @default {8192}
   */
  maxTargetBytes: number;
  /**
   * Bytes of decoded request body. Over it: 413, before reading when `Content-Length` says so.
   * @default {10485760} (10 MiB)
   */
  maxBodyBytes: number;
  /**
   * Bytes of chunk extensions on one chunk-size line. Over it: 400.
   * @default {1024}
   */
  maxChunkExtensionBytes: number;
}

/**
 * How long the server waits, in milliseconds. Each is measured against a clock that ticks a few
 * times per shortest timeout, so a timeout fires within about a quarter of itself (and at least
 * 10 ms) of its time. `Infinity` disables one.
 */
export interface Timeouts {
  /**
   * From the first byte of a request head to its end. A client that sends its head slowly
   * (slowloris) is answered 408 and closed. Measures the whole head, not the gap between bytes.
   * @default {10000}
   */
  headTimeout: number;
  /**
   * A connection with no request in progress (a new one, or kept alive between requests) is
   * closed after this long.
   * @default {5000}
   */
  idleTimeout: number;
  /**
   * While a handler waits for request body bytes (and while an unread body is drained), the
   * longest gap between them. Past it: 408 and close.
   * @default {10000}
   */
  bodyTimeout: number;
  /**
   * The longest a response may stall on a client that does not read. Past it the connection is
   * dropped.
   * @default {30000}
   */
  writeTimeout: number;
  /**
   * The longest a handler may take to return its `Response`. Past it the client gets 503 and the
   * connection closes; the handler's late response is discarded.
   * @default {60000}
   */
  handlerTimeout: number;
}

/**
 * How a message body is delimited (RFC 9112 §6). `"close"` only occurs in responses: the body ends
 * when the server closes the connection (an HTTP/1.0 client and a body of unknown length).
 */
export type Framing =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  | { readonly kind: "close" };

/** A parsed request head: the result of {@linkcode parseRequestHead}. */
export interface RequestHead {
  /** The method as sent; methods are case-sensitive. */
  method: string;
  /** The request-target as sent: origin-form `/a?b`, absolute-form `http://h/a`, `*`, or `host:port`. */
  target: string;
  /** The minor version: `0` for HTTP/1.0, `1` for HTTP/1.1. */
  version: 0 | 1;
  /**
   * Header fields in wire order; names lower-cased, values decoded as latin1 with OWS trimmed.
   * Several `Cookie` fields are one, their values joined by `"; "` (RFC 6265 §5.4).
   */
  headers: Array<[string, string]>;
  /** How the request body is delimited. */
  framing: Framing;
  /** Whether the client allows the connection to stay open after this request. */
  keepAlive: boolean;
  /** Whether the client sent `Expect: 100-continue` (ignored for HTTP/1.0, RFC 9110 §10.1.1). */
  expectContinue: boolean;
  /** The `Host` field value, or `""` when an HTTP/1.0 request has none. */
  host: string;
  /** Bytes the head occupies, up to and including the empty line that ends it. */
  size: number;
}

/** The facts {@linkcode responseFraming} needs to decide how a response body is delimited. */
export interface ResponseFramingInput {
  /** The request method. */
  method: string;
  /** The request's minor version. */
  version: 0 | 1;
  /** Whether the connection may stay open after this response. */
  keepAlive: boolean;
  /** The response status. */
  status: number;
  /** The body length when known, `null` for a stream of unknown length. */
  bodyLength: number | null;
}

/** The result of {@linkcode responseFraming}. */
export interface ResponseFramingResult {
  /** How the body is delimited on the wire. */
  framing: Framing;
  /** Whether the connection closes after this response. */
  close: boolean;
}

//#endregion
//#region Constants and tables

/** The default {@linkcode Timeouts}. */
export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = Object.freeze({
  headTimeout: 10_000,
  idleTimeout: 5_000,
  bodyTimeout: 10_000,
  writeTimeout: 30_000,
  handlerTimeout: 60_000,
});

/** The default {@linkcode Limits}. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxHeadBytes: 16 * 1024,
  maxHeaderCount: 100,
  maxTargetBytes: 8 * 1024,
  maxBodyBytes: 10 * 1024 * 1024,
  maxChunkExtensionBytes: 1024,
});

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const SEMICOLON = 0x3b;

/** Builds a 256-entry membership table from byte ranges and single characters. */
function byteTable(ranges: Array<[number, number]>, characters = ""): Uint8Array {
  const table = new Uint8Array(256);
  for (const [low, high] of ranges) table.fill(1, low, high + 1);
  for (let i = 0; i < characters.length; i++) table[characters.charCodeAt(i)] = 1;
  return table;
}

/** tchar (RFC 9110 §5.6.2): the bytes of a token (methods, field names, coding names). */
const TOKEN = byteTable([[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]], "!#$%&'*+-.^_`|~");

/**
 * field-vchar, SP and HTAB (RFC 9110 §5.5): the bytes allowed inside a field value. obs-text
 * (0x80-0xFF) is allowed; every other control byte, NUL and DEL included, is not.
 */
const FIELD_VALUE = byteTable([[0x21, 0x7e], [0x80, 0xff]], " \t");

/**
 * The bytes we accept in a request-target: visible ASCII (RFC 3986 characters and the few that
 * browsers send unescaped), but not `#` (a fragment is never sent, RFC 9112 §3.2) and not `\`
 * (the URL parser would silently turn it into `/`, a classic path-traversal disguise).
 */
const TARGET = byteTable([[0x21, 0x7e]]);
TARGET[0x23] = 0;
TARGET[0x5c] = 0;

/** The bytes of a Host value: reg-name, IPv4, IP-literal in brackets, `:port` (RFC 3986 §3.2.2). */
const HOST = byteTable([[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]], "-._~!$&'()*+,;=%:[]");

/**
 * Field names most requests carry, by length, so that the parser hands out these strings instead
 * of slicing and lower-casing a new one per field (on Bun, about a fifth of parsing a head).
 */
const COMMON_FIELD_NAMES: ReadonlyArray<readonly string[]> = (() => {
  const byLength: string[][] = [];
  for (
    const name of [
      "host",
      "user-agent",
      "accept",
      "accept-encoding",
      "accept-language",
      "connection",
      "content-length",
      "content-type",
      "transfer-encoding",
      "cookie",
      "referer",
      "origin",
      "cache-control",
      "pragma",
      "priority",
      "authorization",
      "if-none-match",
      "if-modified-since",
      "range",
      "expect",
      "upgrade-insecure-requests",
      "x-forwarded-for",
      "sec-fetch-site",
      "sec-fetch-mode",
      "sec-fetch-dest",
      "sec-fetch-user",
    ]
  ) (byLength[name.length] ??= []).push(name);
  return byLength;
})();

/** The value of each hexadecimal digit, 0xff for every other byte. */
const HEX_VALUE = new Uint8Array(256).fill(0xff);
for (let i = 0; i < 10; i++) HEX_VALUE[0x30 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[0x41 + i] = HEX_VALUE[0x61 + i] = 10 + i;

/** Reason phrases for the statuses this file sends itself and the common ones handlers use. */
const STATUS_TEXT: Readonly<Record<number, string>> = {
  100: "Continue",
  101: "Switching Protocols",
  103: "Early Hints",
  200: "OK",
  201: "Created",
  202: "Accepted",
  203: "Non-Authoritative Information",
  204: "No Content",
  205: "Reset Content",
  206: "Partial Content",
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  422: "Unprocessable Content",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

const ASCII_ENCODER = new TextEncoder();
const ASCII_DECODER = new TextDecoder();

// The runtime, detected once. Bun first, then Deno: both also define `process`, as Node does.
const RUNTIME_GLOBALS = globalThis as {
  Bun?: unknown;
  Deno?: unknown;
  process?: { versions?: { node?: string } };
};

/** What differs per runtime, outside the transport and file adapters. */
interface RuntimeProfile {
  /** The runtime: also the name of its own transport and file adapter. */
  readonly name: TransportName;
  /**
   * Small byte arrays come from a shared slab: on V8 (Deno, Node) a view of a slab costs far less
   * than a new small array; on JSC (Bun) allocating is the cheaper (numbers: bench/NOTES.md).
   */
  readonly slabAllocation: boolean;
  /**
   * `Response` builds a body stream at construction (undici, on Node): `FastResponse` keeps its
   * body beside the Response until someone reads it.
   */
  readonly eagerResponseStreams: boolean;
  /**
   * A request body that came whole with its head is given to `Request` as bytes, not as a
   * stream: `arrayBuffer()` and the like then read it without a stream reader. Only on Bun,
   * where that halved an echoed 16 KiB body's cost; on Node undici copies the bytes into a
   * stream of its own, which costs more, and on Deno it measured no faster (bench/NOTES.md).
   */
  readonly wholeBodyBytes: boolean;
  /**
   * The transport HTTPS uses by default. Deno's `Deno.listenTls` hands over a connection before
   * its handshake and cannot close it until the handshake ends, so a client that stalls its
   * handshake would hold a connection forever: Deno serves HTTPS through `node:tls`.
   */
  readonly tlsTransport: TransportName;
}

/** Every runtime branch outside the adapters reads this table, and nothing else. */
const RUNTIME_PROFILES: Readonly<Record<TransportName, RuntimeProfile>> = {
  deno: {
    name: "deno",
    slabAllocation: true,
    eagerResponseStreams: false,
    wholeBodyBytes: false,
    tlsTransport: "node",
  },
  bun: {
    name: "bun",
    slabAllocation: false,
    eagerResponseStreams: false,
    wholeBodyBytes: true,
    tlsTransport: "bun",
  },
  node: {
    name: "node",
    slabAllocation: true,
    eagerResponseStreams: true,
    wholeBodyBytes: false,
    tlsTransport: "node",
  },
};

/** This runtime's profile: node:net's on Node and on anything else. */
const RUNTIME_PROFILE: RuntimeProfile = RUNTIME_PROFILES[
  RUNTIME_GLOBALS.Bun !== undefined ? "bun" : RUNTIME_GLOBALS.Deno !== undefined ? "deno" : "node"
];

// Small byte arrays come from a shared slab where the runtime profile says so: a response head is
// one allocation per request, a Deno read another. A slab is never written twice: it is dropped
// when full and lives on only as long as views of it do, which is why only small arrays come
// from it.
const SLAB_BYTES = 16 * 1024;
const MAX_SLAB_ALLOCATION = 2 * 1024;
const SLAB_ALLOCATION = RUNTIME_PROFILE.slabAllocation;
const WHOLE_BODY_BYTES = RUNTIME_PROFILE.wholeBodyBytes;
let slab = new Uint8Array(0);
let slabUsed = 0;

/** A new byte array of `length` bytes (zeroed only if not from a slab: callers fill it whole). */
function allocBytes(length: number): Uint8Array {
  if (!SLAB_ALLOCATION || length > MAX_SLAB_ALLOCATION) return new Uint8Array(length);
  if (slabUsed + length > slab.length) {
    slab = new Uint8Array(SLAB_BYTES);
    slabUsed = 0;
  }
  const start = slabUsed;
  // Keep views 8-byte aligned, as allocators do.
  slabUsed += (length + 7) & ~7;
  return slab.subarray(start, start + length);
}

/** Whether a code unit is optional whitespace (RFC 9110 §5.6.3: SP or HTAB). */
function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/**
 * Trims SP and HTAB, and nothing else. `String.prototype.trim` also eats line breaks and Unicode
 * spaces such as U+00A0 (a 0xA0 byte read as latin1): `chunked\xA0` would pass for `chunked`, a
 * transfer-coding obfuscation of the kind request smuggling uses.
 */
function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isOws(text.charCodeAt(start))) start++;
  while (end > start && isOws(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

/**
 * Whether a comma-separated field value (`Connection`, `Upgrade`, `Vary`, `Cache-Control`) lists
 * `token`, a lower-case token, as an element of its own, in any case.
 */
function listsToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  for (const element of value.split(",")) {
    if (trimOws(element).toLowerCase() === token) return true;
  }
  return false;
}

/** `HEAD ` at the start of a request line. */
const HEAD_SP = ASCII_ENCODER.encode("HEAD ");

/** Whether `buf[start, end)` begins with `prefix`. */
function startsWith(buf: Uint8Array, start: number, end: number, prefix: Uint8Array): boolean {
  if (end - start < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[start + i] !== prefix[i]) return false;
  return true;
}

/** The last chunk of a chunked body with no trailers: `0\r\n\r\n`. */
export const LAST_CHUNK: Uint8Array = ASCII_ENCODER.encode("0\r\n\r\n");
const CRLF_BYTES = ASCII_ENCODER.encode("\r\n");
const CONTINUE_BYTES = ASCII_ENCODER.encode("HTTP/1.1 100 Continue\r\n\r\n");

/**
 * The methods the server hands to a handler. RFC 9110 §9.1: methods are case-sensitive, and a
 * server answers a method it does not implement with 501. A fixed list is also the only way to
 * behave the same on every runtime: fetch's `Request` upper-cases `get` to `GET` everywhere, Bun's
 * turns an unknown method into `GET`, and all refuse CONNECT, TRACE and TRACK (this server is no
 * proxy). GET to PATCH are RFC 9110 and RFC 5789; the rest are WebDAV (RFC 4918) and QUERY.
 */
const SERVED_METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "OPTIONS",
  "PATCH",
  "PROPFIND",
  "PROPPATCH",
  "MKCOL",
  "COPY",
  "MOVE",
  "LOCK",
  "UNLOCK",
  "QUERY",
]);

/** The `Allow` value of the answer to `OPTIONS *`. */
const ALLOWED_METHODS_HEADER = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";

//#endregion
//#region Errors

/**
 * Every way a peer can violate HTTP/1.1, and the status we answer it with before closing. Tests and
 * callers match on these codes, never on message text.
 */
export const HTTP_ERROR = {
  /** The request line is not `method SP request-target SP HTTP-version CRLF`. */
  INVALID_REQUEST_LINE: 400,
  /** The method is not a token. */
  INVALID_METHOD: 400,
  /** The request-target has a forbidden byte or is of no form the method allows. */
  INVALID_TARGET: 400,
  /** The request-target is longer than `maxTargetBytes`. */
  TARGET_TOO_LONG: 414,
  /** The version is well formed but not HTTP/1.0 or HTTP/1.1. */
  UNSUPPORTED_VERSION: 505,
  /** A header field is malformed: bad name, whitespace before the colon, control byte, obs-fold. */
  INVALID_HEADER: 400,
  /** A line ends in LF without CR, or a CR is not followed by LF (RFC 9112 §2.2). */
  BARE_LF: 400,
  /** The head is longer than `maxHeadBytes`. */
  HEAD_TOO_LARGE: 431,
  /** The head has more than `maxHeaderCount` fields. */
  TOO_MANY_HEADERS: 431,
  /** An HTTP/1.1 request without exactly one valid `Host` (RFC 9112 §3.2). */
  MISSING_HOST: 400,
  /** `Content-Length` is not one plain decimal number. */
  INVALID_CONTENT_LENGTH: 400,
  /** `Transfer-Encoding` together with `Content-Length`, or in an HTTP/1.0 request. */
  CONFLICTING_FRAMING: 400,
  /** `Transfer-Encoding` whose final coding is not `chunked` (RFC 9112 §6.3). */
  INVALID_TRANSFER_ENCODING: 400,
  /** A transfer coding other than `chunked` (RFC 9112 §6.1). */
  UNSUPPORTED_TRANSFER_ENCODING: 501,
  /** A `Expect` value other than `100-continue` (RFC 9110 §10.1.1). */
  UNSUPPORTED_EXPECTATION: 417,
  /** Malformed chunked framing: size, extension, missing CRLF after the data. */
  INVALID_CHUNK: 400,
  /** The body is longer than `maxBodyBytes`. */
  BODY_TOO_LARGE: 413,
  /** The connection ended in the middle of a head or a body. */
  UNEXPECTED_EOF: 400,
  /** The client was too slow. */
  TIMEOUT: 408,
  /** A method this server does not implement: CONNECT, TRACE, or a mis-cased standard method. */
  METHOD_NOT_IMPLEMENTED: 501,
} as const;

/** The name of one protocol violation, a key of {@linkcode HTTP_ERROR}. */
export type HttpErrorCode = keyof typeof HTTP_ERROR;

/**
 * The peer violated HTTP/1.1. `status` is the response to send before closing the connection.
 * Misuse by the programmer (a bad status code, say) throws `TypeError` or `RangeError` instead.
 *
 * @example Matching a violation by its code
 * ```ts
 * import { HttpError, parseContentLength } from "jsr:@wireserve/wireserve";
 * try {
 *   parseContentLength("12abc");
 * } catch (error) {
 *   if (error instanceof HttpError) console.log(error.code, error.status); // INVALID_CONTENT_LENGTH 400
 * }
 * ```
 */
export class HttpError extends Error {
  /** Which rule was broken. */
  readonly code: HttpErrorCode;
  /** The status to answer with. */
  readonly status: number;
  /**
   * Makes the error for one broken rule, with the status {@linkcode HTTP_ERROR} gives its code.
   *
   * @param code Which rule was broken.
   * @param message What was wrong, for logs; never sent to the client.
   */
  constructor(code: HttpErrorCode, message: string) {
    super(message);
    this.name = "HttpError";
    this.code = code;
    this.status = HTTP_ERROR[code];
  }
}

/**
 * Whether a character may stand as it is inside a quoted message or log field: printable ASCII
 * but `"` and `\`. Everything else is written `\xHH` (here and in the access log).
 */
function isLogSafe(code: number): boolean {
  return code >= 0x20 && code < 0x7f && code !== 0x22 && code !== 0x5c;
}

/** Shows at most 64 bytes of peer input in an error message, with control bytes escaped. */
function quoteBytes(buf: Uint8Array, start: number, end: number): string {
  let text = "";
  const stop = Math.min(end, start + 64);
  for (let i = start; i < stop; i++) {
    const byte = buf[i];
    text += isLogSafe(byte)
      ? String.fromCharCode(byte)
      : `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return `"${text}${end > stop ? "…" : ""}"`;
}

//#endregion
//#region Parse: request heads

/** Decodes bytes as latin1 (every byte to the code point of the same value). */
function decodeLatin1(buf: Uint8Array, start: number, end: number): string {
  let text = "";
  // fromCharCode takes its arguments on the stack: go in slices well below any engine's limit.
  for (let i = start; i < end; i += 8192) {
    text += String.fromCharCode.apply(
      null,
      buf.subarray(i, Math.min(end, i + 8192)) as unknown as number[],
    );
  }
  return text;
}

/**
 * Finds the end of a message head: the index just past the first CRLF CRLF in `buf[start, end)`,
 * or -1 when it is not there yet. Pass `from` to resume a search where an earlier call on a shorter
 * buffer stopped (its `end - 3`): bytes before `from` are not searched again.
 *
 * Every LF must follow a CR and every CR must precede an LF (RFC 9112 §2.2: we do not accept bare
 * LF as a line ending, because another parser in the path might not either).
 *
 * @param buf The bytes received so far.
 * @param start Where the head starts.
 * @param end Where the received bytes end; nothing at or past it is read.
 * @param from Where to resume the search, at least `start`.
 * @returns The index just past the head, or -1.
 * @throws {HttpError} `BARE_LF` for a lone CR or LF.
 *
 * @example
 * ```ts
 * import { findHeadEnd } from "jsr:@wireserve/wireserve";
 * const bytes = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\n\r\nrest");
 * findHeadEnd(bytes, 0, bytes.length); // 27
 * ```
 */
export function findHeadEnd(buf: Uint8Array, start: number, end: number, from = start): number {
  for (let i = from > start ? from : start; i < end; i++) {
    const byte = buf[i];
    if (byte === LF) {
      if (i === start || buf[i - 1] !== CR) {
        throw new HttpError("BARE_LF", "Cannot parse head: LF without CR");
      }
      // "\r\n\r\n": this LF ends an empty line when the two bytes before the CR are CR LF.
      if (i - start >= 3 && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
    } else if (byte === CR && i + 1 < end && buf[i + 1] !== LF) {
      throw new HttpError("BARE_LF", "Cannot parse head: CR without LF");
    }
  }
  return -1;
}

/**
 * Limits `serve()` validated: used as they are, not copied, so that each connection's reader and
 * each chunked body's decoder do not hold a copy of their own (an idle connection should hold
 * little). A set given by anyone else is copied, so that changing it later changes nothing.
 */
const SERVER_LIMITS = new WeakSet<Limits>();

/** Fills in the defaults for a partial set of limits. */
function resolveLimits(limits: Partial<Limits> | undefined): Limits {
  if (limits === undefined) return DEFAULT_LIMITS;
  if (SERVER_LIMITS.has(limits as Limits)) return limits as Limits;
  return {
    maxHeadBytes: limits.maxHeadBytes ?? DEFAULT_LIMITS.maxHeadBytes,
    maxHeaderCount: limits.maxHeaderCount ?? DEFAULT_LIMITS.maxHeaderCount,
    maxTargetBytes: limits.maxTargetBytes ?? DEFAULT_LIMITS.maxTargetBytes,
    maxBodyBytes: limits.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes,
    maxChunkExtensionBytes: limits.maxChunkExtensionBytes ?? DEFAULT_LIMITS.maxChunkExtensionBytes,
  };
}

/** Where the parts of a request line are, as byte offsets. */
interface RequestLineBounds {
  methodEnd: number;
  targetStart: number;
  targetEnd: number;
  version: 0 | 1;
  /** Just past the CRLF that ends the request line. */
  lineEnd: number;
}

/**
 * Scans a request line in `buf[start, end)`, rejecting a bad byte as soon as it is seen, so that a
 * client sending garbage (or TLS to a plaintext port) is answered before it sends a line end.
 * Returns null when the line is not complete yet.
 */
function scanRequestLine(
  buf: Uint8Array,
  start: number,
  end: number,
  limits: Limits,
): RequestLineBounds | null {
  // method = token (RFC 9110 §9.1)
  let i = start;
  while (i < end && TOKEN[buf[i]] === 1) i++;
  if (i === end) return null;
  if (buf[i] !== SP || i === start) {
    if (buf[i] === CR || buf[i] === LF || buf[i] === SP) {
      throw new HttpError(
        "INVALID_REQUEST_LINE",
        `Cannot parse request line: ${quoteBytes(buf, start, i + 1)}`,
      );
    }
    throw new HttpError("INVALID_METHOD", `Cannot parse method: ${quoteBytes(buf, start, i + 1)}`);
  }
  const methodEnd = i;
  // request-target, one SP after the method (RFC 9112 §3: no other whitespace).
  const targetStart = ++i;
  const targetLimit = targetStart + limits.maxTargetBytes;
  while (i < end && TARGET[buf[i]] === 1) {
    if (++i > targetLimit) {
      throw new HttpError(
        "TARGET_TOO_LONG",
        `Cannot parse request target: longer than ${limits.maxTargetBytes} bytes`,
      );
    }
  }
  if (i === end) return null;
  if (buf[i] !== SP || i === targetStart) {
    const byte = buf[i];
    if (byte === CR || byte === LF || byte === SP || byte === HTAB) {
      // "GET /\r\n" is HTTP/0.9, "GET  /" has two spaces: neither is an HTTP/1.x request line.
      throw new HttpError(
        "INVALID_REQUEST_LINE",
        `Cannot parse request line: ${quoteBytes(buf, start, i + 1)}`,
      );
    }
    throw new HttpError(
      "INVALID_TARGET",
      `Cannot parse request target: ${quoteBytes(buf, targetStart, i + 1)}`,
    );
  }
  const targetEnd = i++;
  // HTTP-version = "HTTP/" DIGIT "." DIGIT, then CRLF (RFC 9112 §2.3).
  const expected = "HTTP/0.0\r\n";
  for (let k = 0; k < expected.length; k++, i++) {
    if (i === end) return null;
    const byte = buf[i];
    const want = expected.charCodeAt(k);
    const ok = want === 0x30 ? byte >= 0x30 && byte <= 0x39 : byte === want;
    if (!ok) {
      throw new HttpError(
        (k === 9 && byte !== LF) || (k === 8 && byte === LF) ? "BARE_LF" : "INVALID_REQUEST_LINE",
        `Cannot parse request line: bad version ${quoteBytes(buf, targetEnd + 1, i + 1)}`,
      );
    }
  }
  const major = buf[targetEnd + 6] - 0x30;
  const minor = buf[targetEnd + 8] - 0x30;
  if (major !== 1 || minor > 1) {
    throw new HttpError(
      "UNSUPPORTED_VERSION",
      `Cannot serve HTTP/${major}.${minor}: only HTTP/1.0 and HTTP/1.1 are supported`,
    );
  }
  return { methodEnd, targetStart, targetEnd, version: minor as 0 | 1, lineEnd: i };
}

/**
 * Parses a request head that starts at `buf[start]` (RFC 9112 §2-§6). Returns null when the head
 * is not complete yet, after rejecting whatever can already be rejected: a bad request line, a
 * target over the limit, more than `maxHeadBytes` without an end. Leading empty lines are the
 * caller's business.
 *
 * Header names are lower-cased and values decoded as latin1, so bytes 0x80-0xFF survive a round
 * trip. The body framing is decided by {@linkcode requestFraming}.
 *
 * @param buf The bytes received so far.
 * @param start Where the head starts.
 * @param end Where the received bytes end; nothing at or past it is read.
 * @param limits Size limits; missing ones take their {@linkcode DEFAULT_LIMITS} value.
 * @returns The parsed head, or null when more bytes are needed.
 * @throws {HttpError} On any violation, with the status to answer.
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "jsr:@wireserve/wireserve";
 * const bytes = new TextEncoder().encode("GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n");
 * const head = parseRequestHead(bytes, 0, bytes.length);
 * head?.target; // "/hello"
 * ```
 */
export function parseRequestHead(
  buf: Uint8Array,
  start: number,
  end: number,
  limits?: Partial<Limits>,
): RequestHead | null {
  const resolved = resolveLimits(limits);
  // Look no further than the limit, so that whole and piecemeal input fail the same way.
  const scanEnd = Math.min(end, start + resolved.maxHeadBytes);
  const line = scanRequestLine(buf, start, scanEnd, resolved);
  const headEnd = line === null ? -1 : findHeadEnd(buf, line.lineEnd - 2, scanEnd);
  if (line === null || headEnd === -1) {
    if (end - start > resolved.maxHeadBytes) {
      throw new HttpError(
        "HEAD_TOO_LARGE",
        `Cannot parse head: longer than ${resolved.maxHeadBytes} bytes`,
      );
    }
    return null;
  }
  return parseCompleteHead(buf, start, headEnd, line, resolved);
}

/**
 * Parses a head whose end the caller has found with {@linkcode findHeadEnd} (which also checked
 * every line ending), within the head size limit: the driver's path, without a second search.
 */
function parseKnownHead(
  buf: Uint8Array,
  start: number,
  headEnd: number,
  limits: Limits,
): RequestHead {
  const line = scanRequestLine(buf, start, headEnd, limits);
  if (line === null) {
    // Cannot happen: the head ends in CRLF CRLF, which ends any request line scan.
    throw new HttpError("INVALID_REQUEST_LINE", "Cannot parse request line: incomplete");
  }
  return parseCompleteHead(buf, start, headEnd, line, limits);
}

/** Parses the header section of a head whose request line and end are known. */
function parseCompleteHead(
  buf: Uint8Array,
  start: number,
  headEnd: number,
  line: RequestLineBounds,
  limits: Limits,
): RequestHead {
  // One decode for the whole head; names and values are slices of it.
  let ascii = true;
  for (let i = start; i < headEnd; i++) {
    if (buf[i] >= 0x80) {
      ascii = false;
      break;
    }
  }
  const text = !ascii
    ? decodeLatin1(buf, start, headEnd)
    : start === 0 && headEnd === buf.length
    ? ASCII_DECODER.decode(buf) // the usual chunk: exactly one request head, no view needed
    : ASCII_DECODER.decode(buf.subarray(start, headEnd));
  const method = text.slice(0, line.methodEnd - start);
  const target = text.slice(line.targetStart - start, line.targetEnd - start);
  const headers: Array<[string, string]> = [];
  let host: string | undefined;
  let hostCount = 0;
  let connectionClose = false;
  let connectionKeepAlive = false;
  let expectContinue = false;
  let cookieCount = 0;

  parseFieldLines(buf, text, start, line.lineEnd, headEnd - 2, limits.maxHeaderCount, headers);
  for (let k = 0; k < headers.length; k++) {
    const [name, value] = headers[k];
    switch (name) {
      case "host":
        host = value;
        hostCount++;
        break;
      case "connection": {
        const options = value.toLowerCase();
        // Nearly always one option; a list is split only when there is one.
        for (const option of options.includes(",") ? options.split(",") : [options]) {
          const token = trimOws(option);
          if (token === "close") connectionClose = true;
          else if (token === "keep-alive") connectionKeepAlive = true;
        }
        break;
      }
      case "expect":
        if (value.toLowerCase() !== "100-continue") {
          throw new HttpError(
            "UNSUPPORTED_EXPECTATION",
            "Cannot meet expectation: only 100-continue is supported",
          );
        }
        expectContinue = line.version === 1;
        break;
      case "cookie":
        cookieCount++;
        break;
    }
  }
  // RFC 6265 §5.4 (and RFC 9113 §8.2.3): several Cookie lines are one list joined by "; ", not
  // by the ", " a Headers object would join them with (Hono's getCookie then sees one cookie).
  if (cookieCount > 1) joinCookieFields(headers);

  // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without Host, or with more
  // than one, or with an invalid one.
  if (hostCount > 1 || (line.version === 1 && hostCount === 0)) {
    throw new HttpError(
      "MISSING_HOST",
      `Cannot route request: ${hostCount} Host fields, expected exactly one`,
    );
  }
  if (host !== undefined && !isValidHost(host)) {
    throw new HttpError("MISSING_HOST", "Cannot route request: the Host field is not a valid host");
  }
  checkTargetForm(method, target);
  const framing = requestFraming(headers, line.version);
  return {
    method,
    target,
    version: line.version,
    headers,
    framing,
    keepAlive: line.version === 1 ? !connectionClose : connectionKeepAlive && !connectionClose,
    expectContinue,
    host: host ?? "",
    size: headEnd - start,
  };
}

/** Replaces the Cookie fields of a head with one where the first was, values joined by "; ". */
function joinCookieFields(headers: Array<[string, string]>): void {
  const values: string[] = [];
  let first = -1;
  let kept = 0;
  for (let k = 0; k < headers.length; k++) {
    const field = headers[k];
    if (field[0] === "cookie") {
      values.push(field[1]);
      if (first !== -1) continue;
      first = kept;
    }
    headers[kept++] = field;
  }
  headers.length = kept;
  headers[first] = ["cookie", values.join("; ")];
}

/**
 * Parses field lines (RFC 9112 §5) in `buf[from, fieldsEnd)`, where every line ends in CRLF (the
 * caller has checked line endings). `text` is `buf` decoded as latin1 from `textStart`, so names
 * and values are slices of one string. Appends `[lower-cased name, value]` pairs to `fields`.
 */
function parseFieldLines(
  buf: Uint8Array,
  text: string,
  textStart: number,
  from: number,
  fieldsEnd: number,
  maxCount: number,
  fields: Array<[string, string]>,
): void {
  let i = from;
  while (i < fieldsEnd) {
    // field-line = field-name ":" OWS field-value OWS
    const nameStart = i;
    let upper = false;
    while (TOKEN[buf[i]] === 1) {
      if (buf[i] <= 0x5a && buf[i] >= 0x41) upper = true;
      i++;
    }
    if (buf[i] !== COLON || i === nameStart) {
      const why = i === nameStart && (buf[i] === SP || buf[i] === HTAB)
        ? "obs-fold (a line starting with whitespace) is not allowed"
        : buf[i] === SP || buf[i] === HTAB
        ? "whitespace before the colon is not allowed"
        : `bad field name ${quoteBytes(buf, nameStart, i + 1)}`;
      throw new HttpError("INVALID_HEADER", `Cannot parse header field: ${why}`);
    }
    if (fields.length === maxCount) {
      throw new HttpError("TOO_MANY_HEADERS", `Cannot parse head: more than ${maxCount} fields`);
    }
    const nameEnd = i++;
    while (buf[i] === SP || buf[i] === HTAB) i++;
    const valueStart = i;
    while (FIELD_VALUE[buf[i]] === 1) i++;
    if (buf[i] !== CR) {
      throw new HttpError(
        "INVALID_HEADER",
        `Cannot parse header field: control byte in the value of ${
          quoteBytes(buf, nameStart, nameEnd)
        }`,
      );
    }
    let valueEnd = i;
    while (valueEnd > valueStart && (buf[valueEnd - 1] === SP || buf[valueEnd - 1] === HTAB)) {
      valueEnd--;
    }
    i += 2; // CRLF
    let name = commonFieldName(buf, nameStart, nameEnd);
    if (name === null) {
      name = text.slice(nameStart - textStart, nameEnd - textStart);
      if (upper) name = name.toLowerCase();
    }
    fields.push([name, text.slice(valueStart - textStart, valueEnd - textStart)]);
  }
}

/** The lower-case string of a common field name in `buf[start, end)`, or null. */
function commonFieldName(buf: Uint8Array, start: number, end: number): string | null {
  const candidates = COMMON_FIELD_NAMES[end - start];
  if (candidates === undefined) return null;
  for (let k = 0; k < candidates.length; k++) {
    const candidate = candidates[k];
    let i = start;
    // The bytes are tchars and the candidates lower-case letters and "-": OR-ing in 0x20 lowers
    // a letter and maps no other tchar onto a letter or "-".
    while (i < end && (buf[i] | 0x20) === candidate.charCodeAt(i - start)) i++;
    if (i === end) return candidate;
  }
  return null;
}

/** Host = uri-host [ ":" port ] (RFC 9110 §7.2): checked by byte class and bracket shape. */
function isValidHost(host: string): boolean {
  if (host.length === 0) return false;
  for (let i = 0; i < host.length; i++) {
    const code = host.charCodeAt(i);
    if (code > 0xff || HOST[code] !== 1) return false;
  }
  if (host.charCodeAt(0) === 0x5b) return host.indexOf("]") > 1 && !host.includes("[", 1);
  return !host.includes("[") && !host.includes("]");
}

/**
 * RFC 9112 §3.2: origin-form for every method, absolute-form (`http://` or `https://`) too,
 * asterisk-form only for OPTIONS, authority-form only for CONNECT.
 */
function checkTargetForm(method: string, target: string): void {
  const first = target.charCodeAt(0);
  if (first === 0x2f) return; // "/"
  if (target === "*") {
    if (method === "OPTIONS") return;
  } else if (method === "CONNECT") {
    if (target.includes(":") && !target.includes("/")) return;
  } else {
    const lower = target.slice(0, 8).toLowerCase();
    if (lower.startsWith("http://") || lower.startsWith("https://")) return;
  }
  throw new HttpError(
    "INVALID_TARGET",
    `Cannot parse request target: no ${method} request has the form of ${
      JSON.stringify(target.slice(0, 64))
    }`,
  );
}

/**
 * Parses a `Content-Length` value strictly (RFC 9110 §8.6): one or more decimal digits and nothing
 * else. Lists such as `5, 5` are rejected too: a server that picks one of two lengths is a server
 * that can be smuggled past.
 *
 * @param value The field value, OWS already trimmed.
 * @returns The length.
 * @throws {HttpError} `INVALID_CONTENT_LENGTH` for anything but a safe integer in plain digits.
 *
 * @example
 * ```ts
 * import { parseContentLength } from "jsr:@wireserve/wireserve";
 * parseContentLength("42"); // 42
 * ```
 */
export function parseContentLength(value: string): number {
  // Leading zeros are allowed (1*DIGIT), and do not count toward the 16 digits of a safe integer.
  let first = 0;
  while (first < value.length - 1 && value.charCodeAt(first) === 0x30) first++;
  if (value.length === 0 || value.length - first > 16) {
    throw new HttpError(
      "INVALID_CONTENT_LENGTH",
      `Cannot parse Content-Length: ${JSON.stringify(value.slice(0, 64))}`,
    );
  }
  let length = 0;
  for (let i = first; i < value.length; i++) {
    const digit = value.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) {
      throw new HttpError(
        "INVALID_CONTENT_LENGTH",
        `Cannot parse Content-Length: ${JSON.stringify(value)}`,
      );
    }
    length = length * 10 + digit;
  }
  if (length > Number.MAX_SAFE_INTEGER) {
    throw new HttpError(
      "INVALID_CONTENT_LENGTH",
      `Cannot parse Content-Length: ${value} is too large`,
    );
  }
  return length;
}

/**
 * Decides how a request body is delimited, as RFC 9112 §6.3 orders it:
 *
 * 1. `Transfer-Encoding` and `Content-Length` together: 400. The RFC lets a server drop the length
 *    and go on; we refuse, because that disagreement is exactly what request smuggling exploits.
 * 2. `Transfer-Encoding` in HTTP/1.0: 400 (RFC 9112 §6.1: the framing is faulty).
 * 3. `Transfer-Encoding` whose final coding is `chunked`: chunked, if `chunked` is the only coding
 *    (we decode no other transfer coding: 501 for `gzip, chunked`, RFC 9112 §6.1).
 * 4. `Transfer-Encoding` whose final coding is not `chunked`: 400.
 * 5. `Content-Length`: exactly one field with one plain number.
 * 6. Neither: no body.
 *
 * @param headers The header fields, names lower-cased.
 * @param version The request's minor version.
 * @returns The body framing of the request.
 * @throws {HttpError} For every conflicting or malformed framing.
 *
 * @example
 * ```ts
 * import { requestFraming } from "jsr:@wireserve/wireserve";
 * requestFraming([["content-length", "5"]], 1); // { kind: "length", length: 5 }
 * ```
 */
export function requestFraming(
  headers: ReadonlyArray<readonly [string, string]>,
  version: 0 | 1,
): Framing {
  let contentLength: string | undefined;
  let transferCodings: string[] | undefined;
  for (const [name, value] of headers) {
    if (name === "content-length") {
      if (contentLength !== undefined) {
        throw new HttpError(
          "INVALID_CONTENT_LENGTH",
          "Cannot frame body: more than one Content-Length field",
        );
      }
      contentLength = value;
    } else if (name === "transfer-encoding") {
      transferCodings ??= [];
      // #transfer-coding: empty list elements are allowed and ignored (RFC 9110 §5.6.1).
      for (const element of value.split(",")) {
        const coding = trimOws(element);
        if (coding !== "") transferCodings.push(coding.toLowerCase());
      }
    }
  }
  if (transferCodings !== undefined) {
    if (contentLength !== undefined) {
      throw new HttpError(
        "CONFLICTING_FRAMING",
        "Cannot frame body: both Transfer-Encoding and Content-Length",
      );
    }
    if (version === 0) {
      throw new HttpError(
        "CONFLICTING_FRAMING",
        "Cannot frame body: Transfer-Encoding in an HTTP/1.0 request",
      );
    }
    const last = transferCodings.length - 1;
    if (last < 0 || transferCodings[last] !== "chunked") {
      throw new HttpError(
        "INVALID_TRANSFER_ENCODING",
        "Cannot frame body: the final transfer coding is not chunked",
      );
    }
    for (let k = 0; k < last; k++) {
      const coding = transferCodings[k];
      if (coding === "chunked") {
        throw new HttpError(
          "INVALID_TRANSFER_ENCODING",
          "Cannot frame body: chunked is applied more than once",
        );
      }
      if (!isToken(coding)) {
        throw new HttpError(
          "INVALID_TRANSFER_ENCODING",
          `Cannot frame body: ${JSON.stringify(coding.slice(0, 64))} is not a transfer coding`,
        );
      }
      throw new HttpError(
        "UNSUPPORTED_TRANSFER_ENCODING",
        `Cannot decode transfer coding ${JSON.stringify(coding.slice(0, 64))}`,
      );
    }
    return CHUNKED;
  }
  if (contentLength !== undefined) {
    return { kind: "length", length: parseContentLength(contentLength) };
  }
  return NO_BODY;
}

const NO_BODY: Framing = Object.freeze({ kind: "none" });
const CHUNKED: Framing = Object.freeze({ kind: "chunked" });
const CLOSE_DELIMITED: Framing = Object.freeze({ kind: "close" });

/** Whether a string is a non-empty token (RFC 9110 §5.6.2). */
function isToken(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff || TOKEN[code] !== 1) return false;
  }
  return true;
}
/** Empty lines (CRLF) accepted before a request line: RFC 9112 §2.2 asks for at least one. */
const MAX_EMPTY_LINES = 2;

/**
 * Reads request heads from input that arrives in pieces, without rescanning: the search for the
 * end of a head resumes where it stopped, and the request line is checked early (re-checked only
 * each time the input doubles), so an over-long target is a 414 before the head is complete.
 * RFC 9112 §2.2: empty lines before a request line are skipped, a few of them (some clients send
 * a CRLF after a POST body; a client must not keep a connection alive on empty lines alone).
 *
 * One reader serves one connection; it keeps no bytes, only how far it has looked, counted from
 * the start of the unread input, so the caller may move or grow its buffer between calls.
 *
 * @example
 * ```ts
 * import { HeadReader } from "jsr:@wireserve/wireserve";
 * const reader = new HeadReader();
 * const bytes = new TextEncoder().encode("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
 * reader.read(bytes, 0, 10); // null: more bytes are needed
 * const head = reader.read(bytes, 0, bytes.length);
 * head?.target; // "/"; reader.consumed is bytes.length
 * ```
 */
export class HeadReader {
  /**
   * Bytes the last {@linkcode HeadReader.read} used up from its `start`: the empty lines it
   * skipped, and the head when it returned one. The caller's unread input starts that much later.
   */
  consumed = 0;
  #limits: Limits;
  /** Bytes of the pending head already searched for its end. */
  #scanned = 0;
  /** The pending length at which the incomplete request line is checked again. */
  #nextCheck = 0;
  #emptyLines = 0;

  /**
   * Makes a reader for one connection.
   *
   * @param limits The head limits; the defaults of {@linkcode Limits} for what is not given.
   */
  constructor(limits?: Partial<Limits>) {
    this.#limits = resolveLimits(limits);
  }

  /**
   * Reads `buf[start, end)`: returns the head when it is complete, or null when more bytes are
   * needed. Either way, {@linkcode HeadReader.consumed} says how many bytes were used.
   *
   * @param buf The input.
   * @param start Where the unread input starts.
   * @param end Where it ends.
   * @returns The parsed head, or null.
   * @throws {HttpError} For a head that breaks a rule or a limit, as soon as that is certain.
   */
  read(buf: Uint8Array, start: number, end: number): RequestHead | null {
    let at = start;
    while (end - at >= 2 && buf[at] === CR && buf[at + 1] === LF) {
      if (++this.#emptyLines > MAX_EMPTY_LINES) {
        throw new HttpError(
          "INVALID_REQUEST_LINE",
          "Cannot parse request line: too many empty lines",
        );
      }
      at += 2;
      this.#scanned = 0;
    }
    this.consumed = at - start;
    if (at === end || (end - at === 1 && buf[at] === CR)) return null;
    const limits = this.#limits;
    const limit = Math.min(end, at + limits.maxHeadBytes);
    const headEnd = findHeadEnd(buf, at, limit, Math.max(at, at + this.#scanned - 3));
    if (headEnd === -1) {
      this.#scanned = limit - at;
      const pending = end - at;
      if (pending > limits.maxHeadBytes || pending >= this.#nextCheck) {
        this.#nextCheck = pending * 2;
        parseRequestHead(buf, at, end, limits); // throws for what is already wrong
      }
      return null;
    }
    const head = parseKnownHead(buf, at, headEnd, limits);
    this.consumed = headEnd - start;
    this.#scanned = 0;
    this.#nextCheck = 0;
    this.#emptyLines = 0;
    return head;
  }

  /**
   * Whether unread input starts a `HEAD` request, so that an error answering a head that never
   * completed (too large, too slow) carries no body either (RFC 9110 §9.3.2).
   *
   * @param buf The input.
   * @param start Where the unread input starts (after any empty lines).
   * @param end Where it ends.
   * @returns True when the request line so far begins with `HEAD `.
   */
  static isHeadRequest(buf: Uint8Array, start: number, end: number): boolean {
    return startsWith(buf, start, end, HEAD_SP);
  }
}

/**
 * The effective request URL (RFC 9112 §3.3): the scheme of the connection, the authority from the
 * absolute-form target or else `Host`, or else the server's own address (an HTTP/1.0 request
 * without Host), then the path and query.
 *
 * @param head The request's target and Host.
 * @param secure Whether the connection is TLS (`https`).
 * @param fallbackAuthority `host:port` of the local address, for a request without Host.
 * @returns The URL as a string.
 *
 * @example
 * ```ts
 * import { effectiveRequestUrl } from "jsr:@wireserve/wireserve";
 * effectiveRequestUrl({ target: "/a?b", host: "example.com" }, true, "127.0.0.1:443");
 * // "https://example.com/a?b"
 * ```
 */
export function effectiveRequestUrl(
  head: Pick<RequestHead, "target" | "host">,
  secure: boolean,
  fallbackAuthority: string,
): string {
  const { target } = head;
  // absolute-form: its authority overrides Host (RFC 9112 §3.2.2)
  if (target.charCodeAt(0) !== 0x2f) return target;
  return `${secure ? "https" : "http"}://${
    head.host !== "" ? head.host : fallbackAuthority
  }${target}`;
}

/** The facts {@linkcode shouldKeepAlive} decides from. */
export interface KeepAliveInput {
  /** Whether the client allows it: {@linkcode RequestHead.keepAlive} (version and `Connection`). */
  clientKeepAlive: boolean;
  /** Whether the server closes anyway: shutting down, its request cap, a handler's choice. */
  serverClose: boolean;
  /** Whether the client half-closed and nothing it sent is left to answer. */
  clientGone: boolean;
  /**
   * Request body bytes still to come after the response: 0 when the body is complete, `Infinity`
   * when unknown (chunked, or a body the client holds back until a `100 Continue` never sent).
   */
  unreadBodyBytes: number;
  /** The most unread body the server will read and drop to keep the connection. */
  maxDiscardBytes: number;
}

/**
 * Whether the connection carries another request after this response, as one truth table (the
 * shape of llhttp's `llhttp_should_keep_alive`). RFC 9112 §9.3: HTTP/1.1 persists unless either
 * side says `close`; HTTP/1.0 only with `keep-alive` (that part is `clientKeepAlive`). A body left
 * unread must be read to find the next request: worth it only for a short one of known length.
 *
 * @param input What the request, the server and the body say.
 * @returns True to keep the connection open.
 *
 * @example
 * ```ts
 * import { shouldKeepAlive } from "jsr:@wireserve/wireserve";
 * shouldKeepAlive({
 *   clientKeepAlive: true,
 *   serverClose: false,
 *   clientGone: false,
 *   unreadBodyBytes: Infinity, // a chunked body the handler did not read
 *   maxDiscardBytes: 262144,
 * }); // false
 * ```
 */
export function shouldKeepAlive(input: KeepAliveInput): boolean {
  return input.clientKeepAlive && !input.serverClose && !input.clientGone &&
    input.unreadBodyBytes <= input.maxDiscardBytes;
}

//#endregion
//#region Parse: chunked bodies

// The states of ChunkedDecoder, one per position in the chunked-body grammar (RFC 9112 §7.1):
//   chunked-body = *chunk last-chunk trailer-section CRLF
//   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
const CHUNK_SIZE = 0; // reading hex digits
const CHUNK_EXTENSION = 2; // after the size digits, up to CR; see #extensionByte
const CHUNK_SIZE_LF = 3; // after the CR that ends the size line
const CHUNK_DATA = 4;
const CHUNK_DATA_CR = 5;
const CHUNK_DATA_LF = 6;
const CHUNK_TRAILERS = 7; // the trailer section, up to and including its empty line
const CHUNK_DONE = 8;

// The states inside a chunk extension.
const EXTENSION_BEFORE_SEMICOLON = 0;
const EXTENSION_BEFORE_NAME = 1;
const EXTENSION_NAME = 2;
const EXTENSION_AFTER_NAME = 3;
const EXTENSION_BEFORE_VALUE = 4;
const EXTENSION_TOKEN_VALUE = 5;
const EXTENSION_QUOTED_VALUE = 6;
const EXTENSION_QUOTED_ESCAPE = 7;
const EXTENSION_AFTER_VALUE = 8;

/** qdtext (RFC 9110 §5.6.4): a field-value byte other than DQUOTE and backslash. */
const QUOTED_TEXT = FIELD_VALUE.slice();
QUOTED_TEXT[0x22] = 0;
QUOTED_TEXT[0x5c] = 0;
const EQUALS = 0x3d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

/** 16 hex digits is 2^64: a longer size can only be an attack on an overflowing parser. */
const MAX_CHUNK_SIZE_DIGITS = 16;

/**
 * Decodes a chunked request body incrementally (RFC 9112 §7.1), byte-exact and without copying the
 * data: `decode` hands out views into the buffer it is given. Feed it whatever bytes arrived; it
 * consumes what it can and stops right after the body's final CRLF, so the bytes of a pipelined
 * next request are left to the caller.
 *
 * Chunk extensions are checked for control bytes and bounded by `maxChunkExtensionBytes`, then
 * ignored. Trailer fields are parsed like header fields and kept in `trailers`.
 *
 * @example
 * ```ts
 * import { ChunkedDecoder } from "jsr:@wireserve/wireserve";
 * const bytes = new TextEncoder().encode("5\r\nhello\r\n0\r\n\r\n");
 * const decoder = new ChunkedDecoder();
 * const data: Uint8Array[] = [];
 * decoder.decode(bytes, 0, bytes.length, data); // 15
 * decoder.done; // true
 * ```
 */
export class ChunkedDecoder {
  #limits: Limits;
  #state = CHUNK_SIZE;
  #digits = 0;
  #remaining = 0;
  #extensionBytes = 0;
  #extension = EXTENSION_BEFORE_SEMICOLON;
  #trailerBytes: Uint8Array | null = null;
  #trailerLength = 0;
  #trailers: Array<[string, string]> = [];

  /**
   * Makes a decoder for one body, expecting the first chunk-size line.
   *
   * @param limits `maxChunkExtensionBytes`, and `maxHeadBytes`/`maxHeaderCount` for trailers;
   * each one left out is the default from {@linkcode DEFAULT_LIMITS}.
   */
  constructor(limits?: Partial<Limits>) {
    this.#limits = resolveLimits(limits);
  }

  /** Whether the whole body, trailers included, has been decoded. */
  get done(): boolean {
    return this.#state === CHUNK_DONE;
  }

  /** The trailer fields, names lower-cased, once `done`. */
  get trailers(): Array<[string, string]> {
    return this.#trailers;
  }

  /**
   * Consumes bytes of the chunked body from `buf[start, end)`.
   *
   * @param buf The received bytes.
   * @param start Where unconsumed bytes start.
   * @param end Where the received bytes end; nothing at or past it is read.
   * @param out Receives views of the chunk data, in order.
   * @returns How many bytes were consumed; fewer than offered only once `done`.
   * @throws {HttpError} `INVALID_CHUNK`, `BARE_LF`, or a trailer error.
   */
  decode(buf: Uint8Array, start: number, end: number, out: Uint8Array[]): number {
    let i = start;
    while (i < end) {
      const byte = buf[i];
      switch (this.#state) {
        case CHUNK_SIZE: {
          const value = HEX_VALUE[byte];
          if (value !== 0xff) {
            if (++this.#digits > MAX_CHUNK_SIZE_DIGITS) {
              throw new HttpError(
                "INVALID_CHUNK",
                "Cannot parse chunk size: more than 16 hex digits",
              );
            }
            this.#remaining = this.#remaining * 16 + value;
            if (this.#remaining > Number.MAX_SAFE_INTEGER) {
              throw new HttpError("INVALID_CHUNK", "Cannot parse chunk size: too large");
            }
            i++;
            continue;
          }
          if (this.#digits === 0) {
            throw new HttpError(
              byte === LF ? "BARE_LF" : "INVALID_CHUNK",
              `Cannot parse chunk size: ${quoteBytes(buf, i, i + 1)}`,
            );
          }
          this.#afterSize(byte);
          i++;
          continue;
        }
        case CHUNK_EXTENSION:
          if (byte === CR && this.#extensionAtEnd()) {
            this.#state = CHUNK_SIZE_LF;
          } else {
            if (++this.#extensionBytes > this.#limits.maxChunkExtensionBytes) {
              throw new HttpError(
                "INVALID_CHUNK",
                `Cannot parse chunk extension: longer than ${this.#limits.maxChunkExtensionBytes} bytes`,
              );
            }
            this.#extensionByte(byte);
          }
          i++;
          continue;
        case CHUNK_SIZE_LF:
          if (byte !== LF) {
            throw new HttpError("BARE_LF", "Cannot parse chunk size line: CR without LF");
          }
          this.#state = this.#remaining === 0 ? CHUNK_TRAILERS : CHUNK_DATA;
          i++;
          continue;
        case CHUNK_DATA: {
          const take = Math.min(this.#remaining, end - i);
          out.push(buf.subarray(i, i + take));
          this.#remaining -= take;
          i += take;
          if (this.#remaining === 0) this.#state = CHUNK_DATA_CR;
          continue;
        }
        case CHUNK_DATA_CR:
          if (byte !== CR) {
            throw new HttpError(
              byte === LF ? "BARE_LF" : "INVALID_CHUNK",
              "Cannot parse chunk: data is not followed by CRLF",
            );
          }
          this.#state = CHUNK_DATA_LF;
          i++;
          continue;
        case CHUNK_DATA_LF:
          if (byte !== LF) {
            throw new HttpError("BARE_LF", "Cannot parse chunk: CR without LF after data");
          }
          this.#state = CHUNK_SIZE;
          this.#digits = 0;
          this.#extensionBytes = 0;
          i++;
          continue;
        case CHUNK_TRAILERS:
          i = this.#collectTrailers(buf, i, end);
          continue;
        default: // CHUNK_DONE: the rest belongs to whatever follows the body.
          return i - start;
      }
    }
    return i - start;
  }

  /** After the size digits: CR ends the line; anything else must be a chunk extension. */
  #afterSize(byte: number): void {
    if (byte === CR) {
      this.#state = CHUNK_SIZE_LF;
      return;
    }
    this.#state = CHUNK_EXTENSION;
    this.#extension = EXTENSION_BEFORE_SEMICOLON;
    this.#extensionBytes = 1;
    this.#extensionByte(byte);
  }

  /** Whether a CR may end the size line in the current extension state. */
  #extensionAtEnd(): boolean {
    const state = this.#extension;
    return state === EXTENSION_NAME || state === EXTENSION_TOKEN_VALUE ||
      state === EXTENSION_AFTER_VALUE;
  }

  /**
   * One byte of a chunk extension (RFC 9112 §7.1.1):
   *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
   *   chunk-ext-name = token; chunk-ext-val = token / quoted-string
   * Extensions carry nothing we use, but a parser that skips them loosely to the CR can be made
   * to disagree with one that does not about where the size line ends.
   */
  #extensionByte(byte: number): void {
    const whitespace = byte === SP || byte === HTAB;
    let next = -1;
    switch (this.#extension) {
      case EXTENSION_BEFORE_SEMICOLON:
        next = whitespace
          ? EXTENSION_BEFORE_SEMICOLON
          : byte === SEMICOLON
          ? EXTENSION_BEFORE_NAME
          : -1;
        break;
      case EXTENSION_BEFORE_NAME:
        next = whitespace ? EXTENSION_BEFORE_NAME : TOKEN[byte] === 1 ? EXTENSION_NAME : -1;
        break;
      case EXTENSION_NAME:
        next = TOKEN[byte] === 1
          ? EXTENSION_NAME
          : whitespace
          ? EXTENSION_AFTER_NAME
          : byte === EQUALS
          ? EXTENSION_BEFORE_VALUE
          : byte === SEMICOLON
          ? EXTENSION_BEFORE_NAME
          : -1;
        break;
      case EXTENSION_AFTER_NAME:
        next = whitespace
          ? EXTENSION_AFTER_NAME
          : byte === EQUALS
          ? EXTENSION_BEFORE_VALUE
          : byte === SEMICOLON
          ? EXTENSION_BEFORE_NAME
          : -1;
        break;
      case EXTENSION_BEFORE_VALUE:
        next = whitespace
          ? EXTENSION_BEFORE_VALUE
          : byte === DQUOTE
          ? EXTENSION_QUOTED_VALUE
          : TOKEN[byte] === 1
          ? EXTENSION_TOKEN_VALUE
          : -1;
        break;
      case EXTENSION_TOKEN_VALUE:
        next = TOKEN[byte] === 1
          ? EXTENSION_TOKEN_VALUE
          : whitespace
          ? EXTENSION_BEFORE_SEMICOLON
          : byte === SEMICOLON
          ? EXTENSION_BEFORE_NAME
          : -1;
        break;
      case EXTENSION_QUOTED_VALUE:
        next = byte === DQUOTE
          ? EXTENSION_AFTER_VALUE
          : byte === BACKSLASH
          ? EXTENSION_QUOTED_ESCAPE
          : QUOTED_TEXT[byte] === 1
          ? EXTENSION_QUOTED_VALUE
          : -1;
        break;
      case EXTENSION_QUOTED_ESCAPE:
        next = FIELD_VALUE[byte] === 1 ? EXTENSION_QUOTED_VALUE : -1;
        break;
      case EXTENSION_AFTER_VALUE:
        next = whitespace
          ? EXTENSION_BEFORE_SEMICOLON
          : byte === SEMICOLON
          ? EXTENSION_BEFORE_NAME
          : -1;
        break;
    }
    if (next === -1) {
      throw new HttpError(
        byte === LF ? "BARE_LF" : "INVALID_CHUNK",
        `Cannot parse chunk extension: unexpected ${quoteBytes(new Uint8Array([byte]), 0, 1)}`,
      );
    }
    this.#extension = next;
  }

  /**
   * Copies trailer-section bytes aside (they are rare and small) until the empty line that ends
   * the section, then parses them as field lines. Returns the index after the consumed bytes.
   */
  #collectTrailers(buf: Uint8Array, i: number, end: number): number {
    const limit = this.#limits.maxHeadBytes;
    let bytes = this.#trailerBytes ?? new Uint8Array(64);
    while (i < end) {
      const byte = buf[i++];
      if (this.#trailerLength === bytes.length) {
        if (this.#trailerLength >= limit) {
          throw new HttpError(
            "HEAD_TOO_LARGE",
            `Cannot parse trailers: longer than ${limit} bytes`,
          );
        }
        const grown: Uint8Array = new Uint8Array(Math.min(limit, this.#trailerLength * 2));
        grown.set(bytes);
        bytes = grown;
      }
      const at = this.#trailerLength++;
      bytes[at] = byte;
      const previous = at > 0 ? bytes[at - 1] : -1;
      if (byte === LF) {
        if (previous !== CR) throw new HttpError("BARE_LF", "Cannot parse trailers: LF without CR");
        // The section ends with an empty line: CRLF at its start, or CRLF CRLF.
        if (at === 1 || (at >= 3 && bytes[at - 2] === LF && bytes[at - 3] === CR)) {
          const fieldsEnd = at - 1;
          const text = decodeLatin1(bytes, 0, fieldsEnd);
          parseFieldLines(
            bytes,
            text,
            0,
            0,
            fieldsEnd,
            this.#limits.maxHeaderCount,
            this.#trailers,
          );
          this.#trailerBytes = null;
          this.#state = CHUNK_DONE;
          return i;
        }
      } else if (previous === CR) {
        throw new HttpError("BARE_LF", "Cannot parse trailers: CR without LF");
      }
    }
    this.#trailerBytes = bytes;
    return i;
  }
}

//#endregion
//#region Serialize: responses

/**
 * Decides how a response body is delimited and whether the connection closes after it
 * (RFC 9112 §6.1-§6.3, §9.3):
 *
 * - a response to HEAD, and every 1xx, 204 and 304, has no body;
 * - a body of known length is sent with `Content-Length`;
 * - a body of unknown length is chunked for HTTP/1.1 and delimited by closing for HTTP/1.0, which
 *   has no chunked coding.
 *
 * @param input The request's method and version, whether to keep the connection, the status, the body length.
 * @returns The framing and whether to close afterwards.
 *
 * @example
 * ```ts
 * import { responseFraming } from "jsr:@wireserve/wireserve";
 * responseFraming({ method: "GET", version: 1, keepAlive: true, status: 200, bodyLength: null });
 * // { framing: { kind: "chunked" }, close: false }
 * ```
 */
export function responseFraming(input: ResponseFramingInput): ResponseFramingResult {
  const { status } = input;
  if (input.method === "HEAD" || status < 200 || status === 204 || status === 304) {
    return { framing: NO_BODY, close: !input.keepAlive };
  }
  if (input.bodyLength !== null) {
    return { framing: { kind: "length", length: input.bodyLength }, close: !input.keepAlive };
  }
  if (input.version === 0) return { framing: CLOSE_DELIMITED, close: true };
  return { framing: CHUNKED, close: !input.keepAlive };
}

/**
 * Fields the connection layer owns: whatever a handler sets for them is replaced. The one
 * exception is a `close` option in the handler's `Connection` (see {@linkcode asksToClose}).
 */
const HOP_BY_HOP = new Set(["connection", "content-length", "keep-alive", "transfer-encoding"]);

/**
 * Whether a response's own `Connection` field has the `close` option: the handler wants the
 * connection to end after this response (to shed a client, after an authentication failure), and
 * a handler has no other way to say so. `node:http` and `Bun.serve` honour it too. The field's
 * other options, like every other hop-by-hop field a handler sets, are not sent.
 *
 * @param headers The response's header fields.
 * @returns True if `Connection` lists `close` (any case, among other options or alone).
 *
 * @example
 * ```ts
 * import { asksToClose } from "jsr:@wireserve/wireserve";
 * asksToClose(new Headers({ connection: "Close" })); // true
 * asksToClose(new Headers({ connection: "keep-alive" })); // false
 * ```
 */
export function asksToClose(headers: Headers): boolean {
  return listsToken(headers.get("connection"), "close");
}

/**
 * The `Content-Length` a response to HEAD advertises (RFC 9110 §9.3.2: the fields a GET would
 * have): the length of the body the handler gave, when known; for a handler that answered HEAD
 * without a body, the length it declared itself; otherwise none.
 *
 * @param bodyLength The response body's length: a number when known, null for a stream of unknown
 * length, undefined when the response has no body at all.
 * @param declared The response's own `Content-Length` field, or null.
 * @returns The length to send, or undefined for none.
 *
 * @example
 * ```ts
 * import { headContentLength } from "jsr:@wireserve/wireserve";
 * headContentLength(undefined, "1234"); // 1234: a bodyless answer to HEAD that declared its length
 * headContentLength(13, null); // 13
 * ```
 */
export function headContentLength(
  bodyLength: number | null | undefined,
  declared: string | null,
): number | undefined {
  if (bodyLength !== undefined) return bodyLength ?? undefined;
  if (declared === null) return undefined;
  try {
    return parseContentLength(declared);
  } catch {
    return undefined; // not a usable length: send none
  }
}

/** Options for {@linkcode serializeResponseHead}. */
export interface SerializeResponseHeadOptions {
  /** The reason phrase; the standard one for the status when empty or absent. */
  statusText?: string;
  /** How the body is delimited, from {@linkcode responseFraming}. */
  framing: Framing;
  /** Whether the connection closes after this response. */
  close: boolean;
  /** The request's minor version: HTTP/1.0 clients are told `Connection: keep-alive` explicitly. */
  version?: 0 | 1;
  /**
   * For a body-less response to HEAD (or a 304), the `Content-Length` the body would have had.
   * Ignored when the framing carries a length itself.
   */
  contentLength?: number;
  /** Bytes to append after the head, so that a small response is one write. */
  body?: Uint8Array;
  /**
   * The `Date` field value (an IMF-fixdate, RFC 9110 §6.6.1), unless the headers carry one. The
   * serializer reads no clock: without it, no `Date` is sent.
   */
  date?: string;
  /**
   * For a 101 (Switching Protocols): send `Connection: upgrade` (RFC 9110 §7.8) instead of
   * `close` or `keep-alive`. The handler's `Upgrade` field is sent as it set it.
   */
  upgrade?: boolean;
}

/**
 * Serializes a response head: status line, the handler's fields, `Date` (when given), and the
 * framing fields, ending with the empty line. `Content-Length`, `Transfer-Encoding`, `Connection`
 * and `Keep-Alive` are the connection's business: the handler's values for them are replaced by
 * what `framing` and `close` say. Field values are written as latin1, the inverse of how requests
 * are decoded.
 *
 * @param status The status code, 100-999.
 * @param headers The response's header fields.
 * @param options Framing, connection and an optional body to append.
 * @returns The head (and body, if given) as one byte array.
 * @throws {RangeError} For a status outside 100-999.
 * @throws {TypeError} For a field name or value that could break the head (CR, LF, NUL).
 *
 * @example
 * ```ts
 * import { serializeResponseHead } from "jsr:@wireserve/wireserve";
 * const bytes = serializeResponseHead(200, new Headers({ "content-type": "text/plain" }), {
 *   framing: { kind: "length", length: 2 },
 *   close: false,
 *   body: new TextEncoder().encode("hi"),
 * });
 * ```
 */
export function serializeResponseHead(
  status: number,
  headers: Headers | Iterable<readonly [string, string]>,
  options: SerializeResponseHeadOptions,
): Uint8Array {
  let head = statusLine(status, options.statusText);
  let hasDate = false;
  if (headers instanceof Headers) {
    // A Headers object validated its names and values and yields them lower-cased. forEach, not
    // for-of: Deno's Headers iterator costs several times as much (bench/NOTES.md).
    headers.forEach((value, name) => {
      if (HOP_BY_HOP.has(name)) return;
      if (name === "date") hasDate = true;
      head += `${name}: ${value}\r\n`;
    });
  } else {
    for (const [field, value] of headers) {
      const name = field.toLowerCase();
      if (HOP_BY_HOP.has(name)) continue;
      checkField(name, value);
      if (name === "date") hasDate = true;
      head += `${name}: ${value}\r\n`;
    }
  }
  return finishHead(head, hasDate, status, options);
}

/** The status line of a response head, its reason phrase checked. */
function statusLine(status: number, statusText: string | undefined): string {
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new RangeError(`Cannot serialize response: status ${status} is not in 100-999`);
  }
  if (statusText !== undefined && statusText !== "" && !isReasonPhrase(statusText)) {
    // Bun's Response accepts any statusText, CR LF included: never let one split the head.
    throw new TypeError("Cannot serialize response: the status text has a forbidden character");
  }
  return `HTTP/1.1 ${status} ${statusText || STATUS_TEXT[status] || ""}\r\n`;
}

/**
 * The rest of a response head after the handler's fields (`head`, from the status line on; `hasDate`
 * when they include `Date`): `Date`, the framing and connection fields, the empty line; then the
 * whole as bytes, with the body appended if given.
 */
function finishHead(
  head: string,
  hasDate: boolean,
  status: number,
  options: SerializeResponseHeadOptions,
): Uint8Array {
  if (!hasDate && options.date !== undefined) head += `date: ${options.date}\r\n`;
  const { framing } = options;
  if (framing.kind === "length") head += `content-length: ${framing.length}\r\n`;
  else if (framing.kind === "chunked") head += "transfer-encoding: chunked\r\n";
  else if (options.contentLength !== undefined && status !== 204 && status >= 200) {
    head += `content-length: ${options.contentLength}\r\n`;
  }
  if (options.upgrade === true) head += "connection: upgrade\r\n";
  else if (options.close) head += "connection: close\r\n";
  else if (options.version === 0) head += "connection: keep-alive\r\n";
  head += "\r\n";
  return encodeLatin1(head, options.body);
}

/**
 * {@linkcode serializeResponseHead} from a `Headers`, or else from fields serialized already
 * ({@linkcode serializeFields}, without `Date`).
 */
function serializeHead(
  status: number,
  headers: Headers | null,
  fieldText: string | null,
  options: SerializeResponseHeadOptions,
): Uint8Array {
  if (headers !== null) return serializeResponseHead(status, headers, options);
  return finishHead(statusLine(status, options.statusText) + fieldText, false, status, options);
}

/** reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ) (RFC 9112 §4). */
function isReasonPhrase(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff || FIELD_VALUE[code] !== 1) return false;
  }
  return true;
}

/** Rejects a field a handler could use to inject lines into the head. */
function checkField(name: string, value: string): void {
  if (!isToken(name)) {
    throw new TypeError(`Cannot serialize header: ${JSON.stringify(name)} is not a field name`);
  }
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code > 0xff || (FIELD_VALUE[code] !== 1)) {
      throw new TypeError(`Cannot serialize header ${name}: its value has a forbidden character`);
    }
  }
}

/** Encodes a latin1 string, with `tail` appended, into one new byte array. */
function encodeLatin1(text: string, tail?: Uint8Array): Uint8Array {
  const bytes = allocBytes(text.length + (tail === undefined ? 0 : tail.length));
  const { read, written } = ASCII_ENCODER.encodeInto(text, bytes);
  if (read !== text.length || written !== text.length) {
    // Not ASCII: TextEncoder wrote UTF-8. Write each code point as one byte instead.
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  }
  if (tail !== undefined) bytes.set(tail, text.length);
  return bytes;
}

/**
 * Encodes one chunk of a chunked body: the size in hex, CRLF, the data, CRLF. Empty data gives an
 * empty array, because a zero-size chunk would end the body (use {@linkcode LAST_CHUNK} for that).
 *
 * @param data The chunk data.
 * @returns The encoded chunk, one array.
 *
 * @example
 * ```ts
 * import { encodeChunk } from "jsr:@wireserve/wireserve";
 * new TextDecoder().decode(encodeChunk(new TextEncoder().encode("hello"))); // "5\r\nhello\r\n"
 * ```
 */
export function encodeChunk(data: Uint8Array): Uint8Array {
  if (data.length === 0) return new Uint8Array(0);
  const size = `${data.length.toString(16)}\r\n`;
  const bytes = new Uint8Array(size.length + data.length + 2);
  ASCII_ENCODER.encodeInto(size, bytes);
  bytes.set(data, size.length);
  bytes.set(CRLF_BYTES, size.length + data.length);
  return bytes;
}

//#endregion
//#region FastResponse

// Node's Response (undici) builds a ReadableStream for a body as soon as it is constructed, the
// largest single cost per request there (bench/NOTES.md). Deno and Bun make the stream only when
// `body` is read.
const EAGER_RESPONSE_STREAMS = RUNTIME_PROFILE.eagerResponseStreams;

/** Statuses whose responses cannot have a body (Fetch: "null body status"). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/** The methods of `Response` that read its body whole. */
type BodyReader = "arrayBuffer" | "blob" | "bytes" | "formData" | "json" | "text";

/** Reads the body a {@linkcode FastResponse} holds as it is; set by the class's static block. */
let takeFixedBody: (response: FastResponse) => BodyPrefix | undefined;

/**
 * A {@linkcode FastResponse} of bytes that nothing writes to (a file's contents, read for it or kept
 * by a {@linkcode FileCache}): wireserve sends them as they are, uncopied, and a read of the body
 * gets its own copy (as Response makes one). They are given to `Response` too only when `sentHere`
 * is false on Deno or Bun: `Deno.serve` and `Bun.serve` send a Response's own body, and Deno's
 * `Response` costs microseconds to copy a few KiB (bench/NOTES.md). Set by the class's static
 * block.
 */
let fixedBytesResponse: (
  bytes: Uint8Array<ArrayBuffer>,
  init: ResponseInit,
  sentHere: boolean,
) => FastResponse;

/**
 * A 200 {@linkcode FastResponse} of the whole of a file's contents held by a {@linkcode FileCache},
 * which wireserve sends itself: its fields are given to its `Headers` only when someone asks for
 * them (`headers`). Until then the driver writes `held.fields`, the same fields serialized once
 * ({@linkcode serializeFields}) for every such response, or the whole response `held` made already
 * this second. Building a `Headers` of eight fields and reading it back was the larger part of such
 * a response. Set by the class's static block.
 */
let pendingFieldsResponse: (
  held: HeldContents,
  fields: Array<[string, string]>,
) => FastResponse;

/**
 * The held contents a {@linkcode FastResponse} of {@linkcode pendingFieldsResponse} sends, when its
 * `Headers` was never asked for (its fields are then `held.fields`); otherwise null. Set by the
 * class's static block.
 */
let pendingHeld: (response: FastResponse) => HeldContents | null;

/**
 * Header fields as `name: value` lines (each ending in CR LF) in the order a `Headers` object
 * yields them: names lower-cased and sorted, the values of a repeated name joined with `, `
 * (Set-Cookie lines kept apart); hop-by-hop fields left out, as the serializer leaves them.
 */
function serializeFields(fields: ReadonlyArray<readonly [string, string]>): string {
  const lines: Array<[string, string]> = [];
  for (const [field, value] of fields) {
    const name = field.toLowerCase();
    if (HOP_BY_HOP.has(name)) continue;
    checkField(name, value);
    const last = lines.find((line) => line[0] === name);
    if (last !== undefined && name !== "set-cookie") last[1] += `, ${value}`;
    else lines.push([name, value]);
  }
  lines.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let text = "";
  for (const [name, value] of lines) text += `${name}: ${value}\r\n`;
  return text;
}

/**
 * A `Response` whose body, when it is a string (or, on Node, bytes), wireserve writes straight to
 * the socket: no body stream is made and read. It is a genuine `Response` (a subclass) with the same
 * constructor, fields and methods, so it works under `Deno.serve` and `Bun.serve` too and can be
 * returned by any handler or middleware. Other body types (streams, blobs, form data) behave
 * exactly as they do in `Response`.
 *
 * What it saves, per response, as measured by `bench/driver.ts`: on Node most of the cost of
 * undici's `Response`, which builds a stream for every body as it is constructed; on Deno and Bun
 * the stream's reads. On Node the body waits beside the `Response` until someone reads it (`body`,
 * `text()`…), which then makes the stream; calling `Response.prototype`'s methods on it directly
 * (`Response.prototype.text.call(response)`) sees an empty body there (and on every runtime in the
 * file responses of {@linkcode serveDir} and {@linkcode serveFile}, whose bytes wait the same way;
 * when wireserve sends such a response itself, its header fields wait too, until `headers` is
 * read, so `Response.prototype`'s own `headers` getter sees none).
 *
 * Once someone asks for `body` (to read it, pipe it or tee it), the stream is what wireserve sends,
 * read as any other body is. As with any `Response`, a body is used once: after wireserve takes it
 * to send, `bodyUsed` is true and reading it fails, and returning the same object again is answered
 * with a 500. A `FastResponse` without a body can be returned any number of times.
 *
 * @example
 * ```ts
 * import { FastResponse, serve } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, () => new FastResponse("Hello, World!"));
 * ```
 */
export class FastResponse extends Response {
  /** The body as given (bytes copied), or undefined for a body type left to `Response`. */
  #source: string | Uint8Array<ArrayBuffer> | null | undefined;
  /** On Node, the body is not given to `super`: it waits here, and in `#carrier` once read. */
  #deferred: boolean;
  #carrier: Response | null = null;
  /** Someone asked for the body (its stream, or a read): from then on the stream is sent. */
  #streamAsked = false;
  /** wireserve took the body to send it: it is used from then on. */
  #taken = false;
  /** Fields not yet in `headers` ({@linkcode pendingFieldsResponse}), and the contents they describe. */
  #pendingFields: Array<[string, string]> | null = null;
  #held: HeldContents | null = null;

  static {
    takeFixedBody = (response) => response.#takeFixedBody();
    pendingHeld = (response) => response.#held;
    pendingFieldsResponse = (held, fields) => {
      held.fields ??= serializeFields(fields);
      const response = new FastResponse(null);
      response.#source = held.bytes;
      response.#deferred = true;
      response.#pendingFields = fields;
      response.#held = held;
      return response;
    };
    fixedBytesResponse = (bytes, init, sentHere) => {
      const deferred = EAGER_RESPONSE_STREAMS || sentHere;
      const response = new FastResponse(deferred ? null : bytes, init);
      response.#source = bytes;
      response.#deferred = deferred;
      return response;
    };
  }

  /**
   * Makes a response, as `new Response(body, init)` does.
   *
   * @param body The body: a string takes the fast path, and on Node bytes too (Deno's and Bun's
   * `Response` copy bytes themselves; a second copy would cost what the stream read saves);
   * anything `Response` takes works.
   * @param init Status, status text and headers.
   * @throws {TypeError} When the Fetch standard's `Response` does (Bun's lets the first two pass): a
   * body with a null-body status (204, 304…), a status text that is not a reason phrase, a bad
   * header.
   * @throws {RangeError} For a status outside 200-599.
   */
  constructor(body?: BodyInit | null, init?: ResponseInit) {
    const source = fixedSource(body);
    const deferred = EAGER_RESPONSE_STREAMS && source !== undefined && source !== null;
    super(deferred ? null : body, init);
    this.#source = source;
    this.#deferred = deferred;
    // Checked here for every runtime: Node's Response never sees a deferred body, and Bun's
    // Response accepts a body with 204 and CR LF in the status text.
    if (source !== null && NULL_BODY_STATUS.has(this.status)) {
      throw new TypeError(`Cannot make a response: status ${this.status} cannot have a body`);
    }
    if (!isReasonPhrase(this.statusText)) {
      throw new TypeError("Cannot make a response: the status text has a forbidden character");
    }
    // Fetch gives a string body this Content-Type; Bun's Response leaves it out of `headers` (it
    // adds it only in Bun.serve), and Node's got no body to infer it from: set it here for all.
    if (typeof source === "string" && !this.headers.has("content-type")) {
      this.headers.set("content-type", "text/plain;charset=UTF-8");
    }
  }

  /**
   * A JSON response, as `Response.json(data, init)` makes, on the fast path.
   *
   * @param data What to serialize with `JSON.stringify`.
   * @param init Status, status text and headers; `Content-Type` defaults to `application/json`.
   * @returns The response.
   * @throws {TypeError} When `data` cannot be serialized.
   *
   * @example
   * ```ts
   * import { FastResponse, serve } from "jsr:@wireserve/wireserve";
   * serve({ port: 8080 }, () => FastResponse.json({ message: "Hello, World!" }));
   * ```
   */
  static override json(data: unknown, init?: ResponseInit): FastResponse {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError("Cannot make a JSON response: data is not JSON");
    const headers = new Headers(init?.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new FastResponse(text, { status: init?.status, statusText: init?.statusText, headers });
  }

  /**
   * The header fields, as `Response`'s.
   *
   * @returns The fields.
   */
  override get headers(): Headers {
    const headers = super.headers;
    const pending = this.#pendingFields;
    if (pending !== null) {
      this.#pendingFields = this.#held = null;
      for (const [name, value] of pending) headers.append(name, value);
    }
    return headers;
  }

  /**
   * The body as a stream. Once asked for, the stream is what wireserve sends.
   *
   * @returns The stream, or null for no body.
   */
  override get body(): ReadableStream<Uint8Array<ArrayBuffer>> | null {
    this.#streamAsked = true;
    if (this.#deferred) return this.#carried().body;
    this.#useUpIfTaken();
    return super.body;
  }

  /**
   * Whether the body was read, or taken by wireserve to send.
   *
   * @returns True once the body can no longer be read.
   */
  override get bodyUsed(): boolean {
    if (this.#taken) return true;
    return this.#deferred ? this.#carrier?.bodyUsed ?? false : super.bodyUsed;
  }

  /**
   * A copy whose body can be read independently of this one's.
   *
   * @returns The copy: a `FastResponse` when the body is a string or bytes.
   * @throws {TypeError} When the body is used or locked.
   */
  override clone(): Response {
    const source = this.#source;
    if (source === undefined) return super.clone();
    const locked = this.#deferred
      ? this.#carrier?.body?.locked
      : this.#streamAsked && super.body?.locked;
    if (this.bodyUsed || locked) {
      throw new TypeError("Cannot clone a response whose body is used or locked");
    }
    // An unread body is still the source: the copy holds it too, with exactly these fields.
    const copy = new FastResponse(source, {
      status: this.status,
      statusText: this.statusText,
      headers: this.headers,
    });
    if (!this.headers.has("content-type")) copy.headers.delete("content-type");
    return copy;
  }

  /**
   * Reads the body whole.
   *
   * @returns The body as an ArrayBuffer.
   */
  override arrayBuffer(): Promise<ArrayBuffer> {
    return this.#read("arrayBuffer");
  }

  /**
   * Reads the body whole.
   *
   * @returns The body as a Blob of the response's Content-Type.
   */
  override blob(): Promise<Blob> {
    return this.#read("blob");
  }

  /**
   * Reads the body whole.
   *
   * @returns The body as bytes.
   */
  override bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return this.#read("bytes");
  }

  /**
   * Reads the body whole.
   *
   * @returns The body parsed as form data, by its Content-Type.
   */
  override formData(): Promise<FormData> {
    return this.#read("formData");
  }

  /**
   * Reads the body whole.
   *
   * @returns The body parsed as JSON.
   */
  override json(): Promise<unknown> {
    return this.#read("json");
  }

  /**
   * Reads the body whole.
   *
   * @returns The body decoded as UTF-8.
   */
  override text(): Promise<string> {
    return this.#read("text");
  }

  /** Reads the body whole with Response's method `name`, from wherever the body is. */
  #read<Name extends BodyReader>(name: Name): ReturnType<Response[Name]> {
    this.#streamAsked = true;
    if (this.#deferred) return this.#carried()[name]() as ReturnType<Response[Name]>;
    this.#useUpIfTaken();
    return (Response.prototype[name] as () => ReturnType<Response[Name]>).call(this);
  }

  /** The Response that holds the deferred body once someone reads it, with the same type. */
  #carried(): Response {
    if (this.#carrier === null) {
      const type = this.headers.get("content-type");
      const carrier = new Response(
        this.#source,
        type === null ? undefined : { headers: { "content-type": type } },
      );
      // Sent already: the body is used, as a stream read to its end would be.
      if (this.#taken) carrier.body?.cancel().catch(() => {});
      this.#carrier = carrier;
    }
    return this.#carrier;
  }

  /** Once wireserve sent the body, Deno's and Bun's copy of it is used up, as Node's carrier is. */
  #useUpIfTaken(): void {
    if (this.#taken && !super.bodyUsed) super.body?.cancel().catch(() => {});
  }

  /** The body as one chunk for the driver, or undefined when it must be read as a stream. */
  #takeFixedBody(): BodyPrefix | undefined {
    const source = this.#source;
    if (source === undefined) return undefined;
    // No body, nothing to use up: the same response may be sent again, as a Response(null) may.
    if (source === null) return BODYLESS;
    if (this.#taken) throw new TypeError("Cannot send response: its body was already sent");
    // Someone has the body (a read, a reader, a pipe, a tee): its stream is read as any other
    // body's is, and a used one fails there as a Response's does.
    if (this.#streamAsked) return undefined;
    this.#taken = true;
    const bytes = typeof source === "string" ? encodeUtf8(source) : source;
    return { chunks: [bytes], length: bytes.length, done: true, pending: null, reader: null };
  }
}

/** A string as it is, bytes copied (Response copies them too), null, or undefined for the rest. */
function fixedSource(
  body: BodyInit | null | undefined,
): string | Uint8Array<ArrayBuffer> | null | undefined {
  if (body === null || body === undefined) return null;
  if (typeof body === "string") return body;
  // On Deno and Bun the Response copies the bytes itself; keeping a second copy is not worth it.
  if (!EAGER_RESPONSE_STREAMS) return undefined;
  if (body instanceof ArrayBuffer) return new Uint8Array(body.slice(0));
  if (ArrayBuffer.isView(body)) {
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength).slice();
  }
  return undefined;
}

/** UTF-8 bytes of a string; a short ASCII string takes a slab view. */
function encodeUtf8(text: string): Uint8Array {
  if (text.length <= MAX_SLAB_ALLOCATION) {
    const bytes = allocBytes(text.length);
    const { read, written } = ASCII_ENCODER.encodeInto(text, bytes);
    if (read === text.length && written === text.length) return bytes;
  }
  return ASCII_ENCODER.encode(text);
}

//#endregion
//#region Client address and access log

// Who the client is (its address behind trusted proxies), and the access log that names it: the
// driver writes one entry per request, rateLimit keys its buckets on the same address.

/** Decides whether a peer is a proxy whose forwarding headers can be believed. */
export type TrustProxy = readonly string[] | ((hostname: string) => boolean);

/**
 * The header your proxy writes the client's address into. Only that one is read: a proxy that
 * appends to `X-Forwarded-For` passes a client's own `Forwarded` through untouched, so reading
 * both would let the client choose its address.
 */
export type ProxyHeader = "x-forwarded-for" | "forwarded";

/**
 * The client's address as this server can know it. By default that is the peer of the
 * connection. Behind a reverse proxy the peer is the proxy; the client's address is then in the
 * `Forwarded` (RFC 7239) or `X-Forwarded-For` header, but anybody can send those headers, so they
 * are believed only from peers that `trustProxy` names. The chain is walked from the nearest hop
 * back, and the first address that is not a trusted proxy is the client: a client cannot skip the
 * walk by putting a fake address at the front of the list.
 *
 * @param request The request, for its forwarding headers.
 * @param info The connection, for its peer address.
 * @param trustProxy The trusted proxies: their addresses, or a predicate. None by default.
 * @param header Which header the proxies write: `X-Forwarded-For` (nginx, HAProxy, most load
 * balancers) by default, or `Forwarded` (RFC 7239).
 * @returns The client's address (an IP address, or a `Forwarded` token such as `unknown`).
 *
 * @example
 * ```ts
 * import { clientAddress, serve } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, (request, info) =>
 *   new Response(clientAddress(request, info, ["127.0.0.1"])));
 * ```
 */
export function clientAddress(
  request: Request,
  info: ConnInfo<Addr>,
  trustProxy?: TrustProxy,
  header: ProxyHeader = "x-forwarded-for",
): string {
  const peer = addressName(info.remoteAddr);
  if (trustProxy === undefined) return peer;
  const trusted = typeof trustProxy === "function"
    ? trustProxy
    : (hostname: string) => trustProxy.includes(hostname);
  if (!trusted(peer)) return peer;
  const value = request.headers.get(header) ?? "";
  const hops = header === "forwarded"
    ? forwardedFor(value)
    : value.split(",").map((hop) => withoutPort(trimOws(hop)));
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i];
    if (hop === "" || !trusted(hop)) return hop === "" ? peer : hop;
  }
  return hops[0] ?? peer;
}

/** The `for=` addresses of a `Forwarded` header, nearest hop last, without quotes, brackets or ports. */
function forwardedFor(value: string): string[] {
  const addresses: string[] = [];
  for (const element of value.split(",")) {
    for (const pair of element.split(";")) {
      const equals = pair.indexOf("=");
      if (equals === -1 || trimOws(pair.slice(0, equals)).toLowerCase() !== "for") continue;
      let node = trimOws(pair.slice(equals + 1));
      if (node.startsWith('"') && node.endsWith('"') && node.length >= 2) node = node.slice(1, -1);
      addresses.push(withoutPort(node));
    }
  }
  return addresses;
}

/**
 * An address from a forwarding header without its port: `192.0.2.1:4711` and `[2001:db8::1]:4711`
 * (some proxies add the client's port) name the same client as `192.0.2.1` and `2001:db8::1`.
 */
function withoutPort(node: string): string {
  if (node.startsWith("[")) {
    const close = node.indexOf("]");
    return node.slice(1, close > 0 ? close : undefined);
  }
  const colon = node.indexOf(":");
  // One colon after a dotted address is IPv4 with a port; more colons are an IPv6 address.
  if (colon !== -1 && colon === node.lastIndexOf(":") && node.includes(".")) {
    return node.slice(0, colon);
  }
  return node;
}

/** An access log's line format. */
export type AccessLogFormat = "common" | "combined" | "json";

/**
 * Why a request did not end with its response complete, or why the server answered it itself:
 * the client left, the client stopped reading, the handler threw or took too long, the response
 * body failed mid-stream, the server was shut down, the connection failed in the server, or the
 * request broke the protocol (its {@linkcode HttpErrorCode}).
 */
export type AccessLogReason =
  | "CLIENT_LEFT"
  | "WRITE_TIMEOUT"
  | "HANDLER_ERROR"
  | "HANDLER_TIMEOUT"
  | "BODY_STREAM_FAILED"
  | "SHUTDOWN"
  | "CONNECTION_FAILED"
  | HttpErrorCode;

/** What the access log records of one request. */
export interface AccessLogEntry {
  /** When the request's head had arrived, in milliseconds since the epoch. */
  time: number;
  /** The client's address: the peer, or behind `trustProxy` the one the proxy forwarded. */
  client: string;
  /**
   * The request line as it arrived, escaped so that it cannot split or forge a log line:
   * control bytes, `"`, `\` and bytes past 0x7e as `\xHH`. Cut at 2,048 bytes.
   */
  request: string;
  /** The method; null when the request line could not be parsed. */
  method: string | null;
  /** The request-target as sent; null when the request line could not be parsed. */
  target: string | null;
  /** `"HTTP/1.1"` or `"HTTP/1.0"`; null when the request line could not be parsed. */
  version: string | null;
  /**
   * The status sent; 499 (nginx's "client closed request") when the client left before any
   * response was written.
   */
  status: number;
  /** Bytes of response body sent (none for HEAD), as Apache's `%B`. */
  bytes: number;
  /** The `Referer` field, or null. */
  referer: string | null;
  /** The `User-Agent` field, or null. */
  userAgent: string | null;
  /** Milliseconds from the head's arrival to the response's last byte handed to the socket. */
  duration: number;
  /** Why it went wrong, or null when it did not. */
  reason: AccessLogReason | null;
}

/** Where the access log goes and how it reads: the object form of `ServeOptions.accessLog`. */
export interface AccessLogOptions {
  /**
   * `"common"` and `"combined"` are the Common and Combined Log Formats (Apache's, nginx's
   * default), exactly, for the tools that parse them; `"json"` is one JSON object per line with
   * every field of {@linkcode AccessLogEntry}, duration and reason included.
   * @default {"combined"}
   */
  format?: AccessLogFormat;
  /**
   * Receives the log text: whole lines, each ending in `\n`, several at a time. Called after the
   * responses it records, never on the request's path. The default writes to standard output.
   */
  write?: (text: string) => void;
  /** Proxies whose forwarding header names the client (as {@linkcode clientAddress}). */
  trustProxy?: TrustProxy;
  /**
   * The header those proxies write.
   * @default {"x-forwarded-for"}
   */
  proxyHeader?: ProxyHeader;
}

/** Month names as HTTP dates (RFC 9110 §5.6.7) and the Common Log Format write them. */
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** The last second commonLogTime formatted, and its text: a busy log formats each second once. */
let commonLogSecond = NaN;
let commonLogText = "";

/** `[10/Oct/2000:13:55:36 +0000]`'s inside: the Common Log Format's time, in UTC. */
function commonLogTime(milliseconds: number): string {
  const second = Math.floor(milliseconds / 1000);
  if (second === commonLogSecond) return commonLogText;
  commonLogSecond = second;
  return commonLogText = formatCommonLogTime(second * 1000);
}

function formatCommonLogTime(milliseconds: number): string {
  const date = new Date(milliseconds);
  const two = (value: number) => String(value).padStart(2, "0");
  return `${two(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/${date.getUTCFullYear()}:` +
    `${two(date.getUTCHours())}:${two(date.getUTCMinutes())}:${two(date.getUTCSeconds())} +0000`;
}

/**
 * Escapes text for a quoted log field, as Apache does: control characters, `"`, `\` and anything
 * past 0x7e as `\xHH` (`\uHHHH` past 0xff, which request bytes decoded as latin1 never are).
 */
function escapeLogField(text: string): string {
  let safe = 0;
  while (safe < text.length && isLogSafe(text.charCodeAt(safe))) safe++;
  if (safe === text.length) return text;
  let escaped = text.slice(0, safe);
  for (let i = safe; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (isLogSafe(code)) escaped += text[i];
    else if (code <= 0xff) escaped += `\\x${code.toString(16).padStart(2, "0")}`;
    else escaped += `\\u${code.toString(16).padStart(4, "0")}`;
  }
  return escaped;
}

/**
 * Formats one access log entry as a line (without its line end). Every field that came from the
 * request is escaped, so a request can neither end a line nor forge one.
 *
 * @param entry What happened to one request.
 * @param format Common, Combined or JSON.
 * @returns The line.
 *
 * @example
 * ```ts
 * import { formatAccessLogEntry } from "jsr:@wireserve/wireserve";
 * formatAccessLogEntry({
 *   time: Date.UTC(2026, 11, 7, 3, 4, 5), client: "192.0.2.7", request: "GET / HTTP/1.1",
 *   method: "GET", target: "/", version: "HTTP/1.1", status: 200, bytes: 13,
 *   referer: null, userAgent: "curl/8.5.0", duration: 0.42, reason: null,
 * }, "combined");
 * // '192.0.2.7 - - [07/Dec/2026:03:04:05 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/8.5.0"'
 * ```
 */
export function formatAccessLogEntry(entry: AccessLogEntry, format: AccessLogFormat): string {
  if (format === "json") {
    // JSON.stringify escapes control characters and quotes, but not U+2028 and U+2029, which
    // some readers take for line ends: request bytes decoded as latin1 never are, but an entry
    // given to this function by hand may hold them.
    return JSON.stringify({
      time: new Date(entry.time).toISOString(),
      client: entry.client,
      method: entry.method,
      target: entry.target,
      version: entry.version,
      request: entry.request,
      status: entry.status,
      bytes: entry.bytes,
      duration: Math.round(entry.duration * 1000) / 1000,
      referer: entry.referer,
      userAgent: entry.userAgent,
      reason: entry.reason,
    }).replace(/[\u2028\u2029]/g, (separator) => `\\u${separator.charCodeAt(0).toString(16)}`);
  }
  const common = `${escapeLogField(entry.client)} - - [${commonLogTime(entry.time)}] ` +
    `"${entry.request}" ${entry.status} ${entry.bytes === 0 ? "-" : entry.bytes}`;
  if (format === "common") return common;
  const quoted = (value: string | null) => value === null ? '"-"' : `"${escapeLogField(value)}"`;
  return `${common} ${quoted(entry.referer)} ${quoted(entry.userAgent)}`;
}

/** The longest request line an entry keeps, in bytes. */
const MAX_LOGGED_REQUEST_LINE = 2048;

/** The request line at `buf[start, end)`, up to its end (or the cut), escaped for a log. */
function loggedRequestLine(buf: Uint8Array, start: number, end: number): string {
  let stop = Math.min(end, start + MAX_LOGGED_REQUEST_LINE);
  for (let i = start; i < stop; i++) {
    if (buf[i] === CR || buf[i] === LF) {
      stop = i;
      break;
    }
  }
  return escapeLogField(decodeLatin1(buf, start, stop));
}

/** Log text held before it is written, in characters: past it, it is written at once. */
const ACCESS_LOG_BATCH = 64 * 1024;

/**
 * The access log of one server: formats entries, and writes them in batches, once per turn of
 * the event loop (or when a batch is large), so that no request waits for a write.
 */
class AccessLog {
  readonly #format: AccessLogFormat;
  readonly #write: (text: string) => void;
  readonly #onError: (error: unknown) => void;
  /** Finds the client of a request; null when the peer is the client. */
  readonly client: ((request: Request, info: ConnInfo<Addr>) => string) | null;
  #pending = "";
  #scheduled = false;

  constructor(options: AccessLogOptions, onError: (error: unknown) => void) {
    this.#format = options.format ?? "combined";
    this.#write = options.write ?? ((text) => void nodeProcess.stdout.write(text));
    this.#onError = onError;
    const { trustProxy, proxyHeader } = options;
    this.client = trustProxy === undefined
      ? null
      : (request, info) => clientAddress(request, info, trustProxy, proxyHeader);
  }

  /** Queues the entry's line. */
  add(entry: AccessLogEntry): void {
    this.#pending += `${formatAccessLogEntry(entry, this.#format)}\n`;
    if (this.#pending.length >= ACCESS_LOG_BATCH) {
      this.flush();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes what is queued. */
  flush(): void {
    this.#scheduled = false;
    if (this.#pending === "") return;
    const text = this.#pending;
    this.#pending = "";
    try {
      this.#write(text);
    } catch (error) {
      this.#onError(error);
    }
  }
}

/** Reads `ServeOptions.accessLog`: null when off. */
function accessLogOptions(
  value: boolean | AccessLogFormat | AccessLogOptions | undefined,
): AccessLogOptions | null {
  if (value === undefined || value === false) return null;
  if (value === true) return {};
  const options = typeof value === "string" ? { format: value } : value;
  const format = options.format ?? "combined";
  if (format !== "common" && format !== "combined" && format !== "json") {
    throw new TypeError(
      `Cannot serve: accessLog format must be "common", "combined" or "json", got ${
        JSON.stringify(format)
      }`,
    );
  }
  return options;
}

//#endregion
//#region PROXY protocol

// The PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2): a load balancer that
// relays a TCP connection first writes a header saying whose connection it is, and then the
// client's own bytes. This region is pure (the header parser, the address matcher); the gate that
// reads a header off a new connection is in serve().

/** One type-length-value field of a PROXY protocol version 2 header (§2.2). */
export interface ProxyTlv {
  /** The type: `0x01` ALPN, `0x02` authority, `0x05` unique ID, `0x20` TLS, `0xE0`–`0xEF` custom… */
  readonly type: number;
  /** The value's bytes. */
  readonly value: Uint8Array;
}

/** What a version 2 header's TLS field (`PP2_TYPE_SSL`, §2.2.5) says of the client's connection. */
export interface ProxyTlsInfo {
  /** The client's connection to the proxy was TLS (`PP2_CLIENT_SSL`). */
  readonly secure: boolean;
  /** The client presented a certificate, on this connection or an earlier one of its session. */
  readonly clientCertificate: boolean;
  /** The client's certificate was presented and verified (the field's `verify` is zero). */
  readonly verified: boolean;
  /** The TLS version, such as `"TLSv1.3"`, when the proxy sent it. */
  readonly version: string | null;
  /** The cipher, such as `"TLS_AES_128_GCM_SHA256"`, when the proxy sent it. */
  readonly cipher: string | null;
  /** The Common Name of the client certificate's subject, when the proxy sent it. */
  readonly commonName: string | null;
}

/** A PROXY protocol header: the result of {@linkcode parseProxyHeader}. */
export interface ProxyProtocolHeader {
  /** 1 for the text form, 2 for the binary one. */
  readonly version: 1 | 2;
  /**
   * `"PROXY"`: relayed on behalf of a client. `"LOCAL"`: a connection the proxy opened itself (a
   * health check), whose endpoints are the real ones. A version 1 `UNKNOWN` line is `"PROXY"` with
   * no addresses.
   */
  readonly command: "PROXY" | "LOCAL";
  /**
   * The client's address, or null when the header gives none a TCP server can use (`LOCAL`,
   * `UNKNOWN`, the unspecified family, UDP, Unix sockets): the connection's own peer stands then.
   */
  readonly source: NetAddr | null;
  /** The address the client connected to, or null with `source`. */
  readonly destination: NetAddr | null;
  /** Version 2's TLV fields in wire order (the TLS field's sub-fields inside its own value). */
  readonly tlvs: readonly ProxyTlv[];
  /** The application protocol the client chose with the proxy (`PP2_TYPE_ALPN`), such as `"h2"`. */
  readonly alpn: string | null;
  /** The host name the client asked the proxy for (`PP2_TYPE_AUTHORITY`, TLS's SNI). */
  readonly authority: string | null;
  /** What the TLS field says of the client's TLS connection to the proxy. */
  readonly tls: ProxyTlsInfo | null;
  /** Bytes the header occupies. */
  readonly size: number;
}

/** How a PROXY protocol header can be wrong; the connection is closed without a response. */
export type ProxyProtocolErrorCode =
  | "NOT_PROXY_PROTOCOL"
  | "INVALID_HEADER"
  | "HEADER_TOO_LARGE"
  | "CHECKSUM_MISMATCH";

/**
 * A PROXY protocol header that is not one: "any sequence which does not exactly match the protocol
 * must be discarded and cause the receiver to abort the connection" (§2.1).
 */
export class ProxyProtocolError extends Error {
  /** Which rule was broken. */
  readonly code: ProxyProtocolErrorCode;
  /**
   * Makes the error for one broken rule.
   *
   * @param code Which rule was broken.
   * @param message What was wrong, for logs.
   */
  constructor(code: ProxyProtocolErrorCode, message: string) {
    super(message);
    this.name = "ProxyProtocolError";
    this.code = code;
  }
}

/** The 12 bytes a version 2 header starts with (§2.2). */
const PROXY_V2_SIGNATURE = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);
/** `"PROXY "`, the start of a version 1 line. */
const PROXY_V1_PREFIX = Uint8Array.of(0x50, 0x52, 0x4f, 0x58, 0x59, 0x20);
/**
 * The longest version 1 line, CRLF included (§2.1: "PROXY UNKNOWN" with two full IPv6 addresses
 * and ports); "if the CRLF sequence is not found in the first 107 characters, the receiver should
 * declare the line invalid".
 */
const PROXY_V1_MAX_BYTES = 107;
/**
 * The default limit of a version 2 header, TLVs included. The format allows 65,551 bytes; what
 * proxies send (addresses, ALPN, SNI, a TLS field, AWS's endpoint ID) is a few hundred.
 */
const PROXY_DEFAULT_MAX_BYTES = 4096;

const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_CRC32C = 0x03;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_SUBTYPE_SSL_CIPHER = 0x23;

/**
 * Parses a PROXY protocol header (version 1 or 2) at the start of `buf`: the bytes a connection
 * from a load balancer begins with. Returns null while the header is incomplete; the bytes past
 * `size` are the client's own. Throws as soon as the bytes cannot be a header, so that a
 * connection that does not speak the protocol is dropped at its first packet.
 *
 * @param buf The connection's first bytes.
 * @param maxBytes The largest version 2 header accepted (a version 1 line is at most 107 bytes).
 * @returns The header, or null if more bytes are needed.
 * @throws {ProxyProtocolError} If the bytes are not a valid header.
 *
 * @example
 * ```ts
 * import { parseProxyHeader } from "jsr:@wireserve/wireserve";
 * const bytes = new TextEncoder().encode("PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n");
 * const header = parseProxyHeader(bytes);
 * console.log(header?.source); // { hostname: "192.0.2.7", port: 51000, transport: "tcp" }
 * ```
 */
export function parseProxyHeader(
  buf: Uint8Array,
  maxBytes: number = PROXY_DEFAULT_MAX_BYTES,
): ProxyProtocolHeader | null {
  // The two forms differ in their first byte; each is rejected at the first byte that departs
  // from its signature, not when the buffer is full.
  const signature = buf[0] === 0x0d ? PROXY_V2_SIGNATURE : PROXY_V1_PREFIX;
  const known = Math.min(buf.length, signature.length);
  for (let i = 0; i < known; i++) {
    if (buf[i] !== signature[i]) {
      throw new ProxyProtocolError(
        "NOT_PROXY_PROTOCOL",
        `Cannot read a PROXY protocol header: the connection begins ${
          quoteBytes(buf, 0, Math.min(buf.length, 16))
        }`,
      );
    }
  }
  if (buf.length < signature.length) return null;
  return signature === PROXY_V2_SIGNATURE ? parseProxyV2(buf, maxBytes) : parseProxyV1(buf);
}

/** Version 1: `PROXY TCP4|TCP6|UNKNOWN source destination sourcePort destinationPort CRLF`. */
function parseProxyV1(buf: Uint8Array): ProxyProtocolHeader | null {
  // The CR may stand at index 105 at the latest, so that its LF is the 107th byte.
  const stop = Math.min(buf.length, PROXY_V1_MAX_BYTES - 1);
  let end = -1;
  for (let i = PROXY_V1_PREFIX.length; i < stop; i++) {
    const byte = buf[i];
    if (byte === 0x0d && i + 1 < buf.length) {
      // "The receiver must not tolerate a single CR or LF character to end the line."
      if (buf[i + 1] !== 0x0a) throw invalidProxyV1(buf, i + 2);
      end = i;
      break;
    }
    if (byte < 0x20 && byte !== 0x0d || byte > 0x7e) throw invalidProxyV1(buf, i + 1);
  }
  if (end === -1) {
    if (buf.length < PROXY_V1_MAX_BYTES) return null;
    throw new ProxyProtocolError(
      "HEADER_TOO_LARGE",
      `Cannot read a PROXY protocol header: no CRLF in the first ${PROXY_V1_MAX_BYTES} bytes`,
    );
  }
  const fields = decodeLatin1(buf, 0, end).split(" ");
  const size = end + 2;
  // "The receiver must ignore anything presented before the CRLF is found" after UNKNOWN (§2.1).
  if (fields[1] === "UNKNOWN") return proxyHeader(1, "PROXY", null, null, [], size);
  const family = fields[1] === "TCP4" ? 4 : fields[1] === "TCP6" ? 6 : 0;
  if (fields.length !== 6 || family === 0) throw invalidProxyV1(buf, size);
  const source = parseIpAddress(fields[2]);
  const destination = parseIpAddress(fields[3]);
  const sourcePort = parsePort(fields[4]);
  const destinationPort = parsePort(fields[5]);
  if (
    source === null || destination === null || source.length !== destination.length ||
    (source.length === 4) !== (family === 4) || sourcePort < 0 || destinationPort < 0
  ) {
    throw invalidProxyV1(buf, size);
  }
  return proxyHeader(
    1,
    "PROXY",
    toNetAddr(formatIpAddress(source), sourcePort),
    toNetAddr(formatIpAddress(destination), destinationPort),
    [],
    size,
  );
}

function invalidProxyV1(buf: Uint8Array, end: number): ProxyProtocolError {
  return new ProxyProtocolError(
    "INVALID_HEADER",
    `Cannot read a PROXY protocol header: not a valid version 1 line: ${quoteBytes(buf, 0, end)}`,
  );
}

function invalidProxyV2(why: string): ProxyProtocolError {
  return new ProxyProtocolError("INVALID_HEADER", `Cannot read a PROXY protocol header: ${why}`);
}

/** A decimal port as version 1 writes it: 0 to 65535, no sign, no leading zero; -1 if not. */
function parsePort(text: string): number {
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(text)) return -1;
  const port = Number(text);
  return port <= 65535 ? port : -1;
}

/** Version 2: the signature, version and command, family and protocol, length, addresses, TLVs. */
function parseProxyV2(buf: Uint8Array, maxBytes: number): ProxyProtocolHeader | null {
  if (buf.length < 16) return null;
  const versionCommand = buf[12];
  const familyProtocol = buf[13];
  // "The receiver must only accept" version 2; other commands "must" drop the connection; families
  // and protocols past the assigned ones "must be rejected as invalid" (§2.2).
  if (versionCommand >> 4 !== 2) throw invalidProxyV2(`version ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command > 1) throw invalidProxyV2(`command ${command}`);
  const family = familyProtocol >> 4;
  const protocol = familyProtocol & 0x0f;
  if (family > 3 || protocol > 2) {
    throw invalidProxyV2(`family and protocol 0x${familyProtocol.toString(16)}`);
  }
  const size = 16 + (buf[14] << 8 | buf[15]);
  if (size > maxBytes) {
    throw new ProxyProtocolError(
      "HEADER_TOO_LARGE",
      `Cannot read a PROXY protocol header: ${size} bytes, over the limit of ${maxBytes}`,
    );
  }
  if (buf.length < size) return null;
  // LOCAL: "the receiver must accept this connection as valid and must use the real connection
  // endpoints and discard the protocol block including the family".
  if (command === 0) return proxyHeader(2, "LOCAL", null, null, [], size);
  const addressBytes = [0, 12, 36, 216][family];
  if (size - 16 < addressBytes) throw invalidProxyV2(`${size - 16} bytes of addresses`);
  const tlvs = parseTlvs(buf, 16 + addressBytes, size);
  for (const tlv of tlvs) {
    if (tlv.type === PP2_TYPE_CRC32C) checkProxyChecksum(buf, size, tlv.value);
  }
  // TCP over IPv4 or IPv6 is what this server can use; for the other valid combinations the
  // receiver "falls back to the UNSPEC mode", the connection's real endpoints.
  let source: NetAddr | null = null;
  let destination: NetAddr | null = null;
  if ((family === 1 || family === 2) && protocol === 1) {
    const length = family === 1 ? 4 : 16;
    const ports = 16 + 2 * length;
    source = toNetAddr(
      formatIpAddress(buf.subarray(16, 16 + length)),
      buf[ports] << 8 | buf[ports + 1],
    );
    destination = toNetAddr(
      formatIpAddress(buf.subarray(16 + length, ports)),
      buf[ports + 2] << 8 | buf[ports + 3],
    );
  }
  return proxyHeader(2, "PROXY", source, destination, tlvs, size);
}

/** TLV fields from `start` to `end`, as views of `buf`; each must fit exactly. */
function parseTlvs(buf: Uint8Array, start: number, end: number): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  for (let i = start; i < end;) {
    if (i + 3 > end) throw invalidProxyV2("a TLV field is cut short");
    const valueEnd = i + 3 + (buf[i + 1] << 8 | buf[i + 2]);
    if (valueEnd > end) throw invalidProxyV2("a TLV field runs past the header");
    tlvs.push({ type: buf[i], value: buf.subarray(i + 3, valueEnd) });
    i = valueEnd;
  }
  return tlvs;
}

/**
 * The CRC32c field (§2.2.3): "the receiver MUST … replace the 32 bits of the checksum field in the
 * received PROXY header with all '0's and calculate a CRC32c checksum value of the whole PROXY
 * header", and drop the connection when the two differ.
 */
function checkProxyChecksum(buf: Uint8Array, size: number, field: Uint8Array): void {
  if (field.length !== 4) throw invalidProxyV2("a CRC32c field that is not 4 bytes");
  const sent = (field[0] << 24 | field[1] << 16 | field[2] << 8 | field[3]) >>> 0;
  const header = buf.slice(0, size);
  const offset = field.byteOffset - buf.byteOffset;
  header.fill(0, offset, offset + 4);
  if (crc32c(header) !== sent) {
    throw new ProxyProtocolError(
      "CHECKSUM_MISMATCH",
      "Cannot read a PROXY protocol header: its CRC32c checksum does not match",
    );
  }
}

let crc32cTable: Uint32Array | null = null;

/** CRC-32C (Castagnoli, RFC 4960 Appendix B), the checksum version 2 headers may carry. */
function crc32c(bytes: Uint8Array): number {
  const table = crc32cTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    for (let bit = 0; bit < 8; bit++) n = n & 1 ? 0x82f63b78 ^ (n >>> 1) : n >>> 1;
    return n;
  });
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = table[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const UTF8_FATAL = new TextDecoder("utf-8", { fatal: true });

/** Builds the header record, decoding the TLVs this server knows and copying every value. */
function proxyHeader(
  version: 1 | 2,
  command: "PROXY" | "LOCAL",
  source: NetAddr | null,
  destination: NetAddr | null,
  views: ProxyTlv[],
  size: number,
): ProxyProtocolHeader {
  let alpn: string | null = null;
  let authority: string | null = null;
  let tls: ProxyTlsInfo | null = null;
  const tlvs = views.map(({ type, value }) => ({ type, value: value.slice() }));
  for (const { type, value } of tlvs) {
    if (type === PP2_TYPE_ALPN) alpn = decodeLatin1(value, 0, value.length);
    else if (type === PP2_TYPE_AUTHORITY) authority = decodeProxyText(value);
    else if (type === PP2_TYPE_SSL) tls = parseProxyTls(value);
  }
  return { version, command, source, destination, tlvs, alpn, authority, tls, size };
}

function decodeProxyText(value: Uint8Array): string {
  try {
    return UTF8_FATAL.decode(value);
  } catch {
    throw invalidProxyV2("a text TLV field that is not UTF-8");
  }
}

/** `struct pp2_tlv_ssl { uint8_t client; uint32_t verify; struct pp2_tlv sub_tlv[0]; }` (§2.2.5). */
function parseProxyTls(value: Uint8Array): ProxyTlsInfo {
  if (value.length < 5) throw invalidProxyV2("a TLS field shorter than 5 bytes");
  const client = value[0];
  const verify = value[1] | value[2] | value[3] | value[4];
  let version: string | null = null;
  let cipher: string | null = null;
  let commonName: string | null = null;
  for (const { type, value: text } of parseTlvs(value, 5, value.length)) {
    if (type === PP2_SUBTYPE_SSL_VERSION) version = decodeProxyText(text);
    else if (type === PP2_SUBTYPE_SSL_CIPHER) cipher = decodeProxyText(text);
    else if (type === PP2_SUBTYPE_SSL_CN) commonName = decodeProxyText(text);
  }
  const clientCertificate = (client & 0x06) !== 0; // PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
  return {
    secure: (client & 0x01) !== 0,
    clientCertificate,
    verified: clientCertificate && verify === 0,
    version,
    cipher,
    commonName,
  };
}

/**
 * An IPv4 or IPv6 address in text as its 4 or 16 bytes, or null. Strict: IPv4 as four decimal
 * numbers without leading zeros; IPv6 in RFC 4291 §2.2 text (one `::` at most, an IPv4 tail
 * allowed), without a zone. The same rules on every runtime, where each `node:net.isIP` differs.
 */
function parseIpAddress(text: string): Uint8Array | null {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(parts[i])) return null;
    const value = Number(parts[i]);
    if (value > 255) return null;
    bytes[i] = value;
  }
  return bytes;
}

function parseIpv6(text: string): Uint8Array | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups: number[][] = [];
  for (let h = 0; h < halves.length; h++) {
    const half = halves[h];
    const words: number[] = [];
    const parts = half === "" ? [] : half.split(":");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      // A dotted IPv4 part may only be the last 32 bits (RFC 4291 §2.2).
      if (i === parts.length - 1 && h === halves.length - 1 && part.includes(".")) {
        const ipv4 = parseIpv4(part);
        if (ipv4 === null) return null;
        words.push(ipv4[0] << 8 | ipv4[1], ipv4[2] << 8 | ipv4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(part)) {
        words.push(parseInt(part, 16));
      } else {
        return null;
      }
    }
    groups.push(words);
  }
  const [head, tail = []] = groups;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const words = [...head, ...new Array<number>(halves.length === 1 ? 0 : missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    bytes[2 * i] = words[i] >> 8;
    bytes[2 * i + 1] = words[i] & 0xff;
  }
  return bytes;
}

/**
 * Writes 4 or 16 address bytes as text: dotted decimal, or IPv6 as RFC 5952 recommends (lower
 * case, no leading zeros, the longest run of two or more zero groups as `::`). An IPv4-mapped IPv6
 * address is written as its IPv4 address, as the connection's own peer is.
 */
function formatIpAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  let mapped = bytes[10] === 0xff && bytes[11] === 0xff;
  for (let i = 0; i < 10; i++) mapped &&= bytes[i] === 0;
  if (mapped) return bytes.subarray(12).join(".");
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(bytes[i] << 8 | bytes[i + 1]);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = words.map((word) => word.toString(16));
  if (bestStart === -1) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/**
 * A test of whether an address is in a list of addresses and CIDR blocks (`"10.0.0.0/8"`,
 * `"192.0.2.1"`, `"2001:db8::/32"`, `"::1"`). An IPv4-mapped IPv6 address matches as its IPv4
 * address. Throws a TypeError for an entry that is not one.
 */
function addressMatcher(list: readonly string[], what: string): (hostname: string) => boolean {
  const blocks = list.map((entry) => {
    const [address, prefix, extra] = entry.split("/");
    const full = parseIpAddress(address);
    const length = prefix === undefined ? NaN : /^\d{1,3}$/.test(prefix) ? Number(prefix) : -1;
    if (full === null || extra !== undefined || length < 0 || length > full.length * 8) {
      throw new TypeError(`Cannot use ${what}: ${JSON.stringify(entry)} is not an address or CIDR`);
    }
    const bytes = unmapIpv4(full);
    // A mapped block (::ffff:10.0.0.0/104) is the IPv4 block it maps (10.0.0.0/8).
    const bits = (Number.isNaN(length) ? full.length * 8 : length) -
      (full.length - bytes.length) * 8;
    return { bytes, bits: Math.max(bits, 0) };
  });
  return (hostname) => {
    const parsed = parseIpAddress(hostname);
    if (parsed === null) return false;
    const address = unmapIpv4(parsed);
    return blocks.some(({ bytes, bits }) => {
      if (bytes.length !== address.length) return false;
      const whole = bits >> 3;
      for (let i = 0; i < whole; i++) if (bytes[i] !== address[i]) return false;
      const mask = 0xff00 >> (bits & 7) & 0xff;
      return mask === 0 || (bytes[whole] & mask) === (address[whole] & mask);
    });
  };
}

/** The IPv4 address inside an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`), else the bytes as they are. */
function unmapIpv4(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== 16 || bytes[10] !== 0xff || bytes[11] !== 0xff) return bytes;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return bytes;
  return bytes.subarray(12);
}

/** A NetAddr with the IPv4-mapped IPv6 prefix removed, as Deno.serve reports addresses. */
function toNetAddr(hostname: string, port: number): NetAddr {
  return {
    hostname: hostname.startsWith("::ffff:") && hostname.includes(".")
      ? hostname.slice(7)
      : hostname,
    port,
    transport: "tcp",
  };
}

/**
 * An address as one string, for the access log and per-client accounting: the IP address, or
 * `unix:` and the path for a Unix socket (a client's end has none: `unix:`, as nginx logs it).
 */
function addressName(addr: Addr): string {
  return addr.transport === "tcp" ? addr.hostname : `unix:${addr.path}`;
}

//#endregion
//#region Transport contract

// What the driver and a transport adapter promise each other; every adapter below, and the
// in-memory one the tests use, obeys it.
//
// - The adapter does mechanics only: read, write with a high-water mark, pause, resume, close
//   after the queue is sent (with or without shutting the write side first and reading on for
//   the linger time, which only it can start when its queue is out), and close at once. Every
//   policy (when to close, whether to linger, what input to drop, every other deadline) is the
//   driver's.
// - Re-entrancy: no event is delivered from inside a call the driver makes (`write`, `pause`,
//   `resume`, `end`, `destroy`). An adapter that learns of something during such a call (a socket
//   closed by `destroy`, say) delivers it from a later turn. The driver may therefore change its
//   state after calling the transport without being called back halfway.
// - `onClose` comes exactly once, last; nothing is delivered after it.

/** Where and how to listen. */
export interface ListenOptions {
  /** The address to bind. */
  hostname: string;
  /** The port to bind; 0 picks a free one. */
  port: number;
  /** A Unix socket file to listen on instead of `hostname` and `port`. */
  path?: string;
  /** Share the port with other listeners that ask the same (SO_REUSEPORT). */
  reusePort?: boolean;
  /**
   * With `tls`: accept plain TCP, and handshake only when the server calls `startTls` on the
   * connection (after the PROXY protocol header, which precedes the handshake).
   */
  deferTls?: boolean;
  /** PEM certificate chain and key: listen for TLS instead of plain TCP. */
  tls?: { cert: string; key: string };
  /**
   * Milliseconds a TLS handshake may take before the connection is dropped, where the runtime
   * handshakes before the connection reaches the server.
   */
  handshakeTimeout?: number;
}

/** A listening socket, as a transport adapter presents it. */
export interface TransportListener {
  /** The bound address (with the real port when 0 was asked for). */
  readonly addr: Addr;
  /** Stops accepting connections; open ones are not touched. */
  close(): void;
}

/**
 * A transport adapter: listens, and for each accepted connection calls `accept`, which returns the
 * events to deliver for it. This is the only part of wireserve that knows which runtime it is on.
 */
export type Transport = (
  options: ListenOptions,
  accept: (connection: TransportConnection) => ConnectionEvents,
) => TransportListener | Promise<TransportListener>;

/**
 * One accepted connection, as a transport adapter presents it. The adapter pushes events into the
 * {@linkcode ConnectionEvents} the server returns for it; the server calls these methods. No event
 * is delivered from inside one of these calls.
 */
export interface TransportConnection {
  /** The client's address. */
  readonly remoteAddr: Addr;
  /** The local address the client connected to. */
  readonly localAddr: Addr;
  /** Whether the bytes travel over TLS. */
  readonly secure: boolean;
  /** What a PROXY protocol header said, when one came first (a wrapper sets it, not an adapter). */
  readonly proxy?: ProxyInfo;
  /**
   * Queues bytes for sending; the adapter takes ownership of them. Returns false once more than a
   * high-water mark is queued: the caller should then wait for `onDrain` before writing more, so
   * that a client that does not read cannot make the server buffer without bound.
   */
  write(bytes: Uint8Array): boolean;
  /**
   * Optional: queues several byte arrays to go out together, as `write` would one after another,
   * where the transport can gather them into one system call (`writev`, or a copy into an array
   * it reuses). The adapter takes ownership of the arrays, not of the list. Without it the driver
   * copies a response's head and body into a new array, or writes large pieces one by one.
   */
  writeMany?(pieces: readonly Uint8Array[]): boolean;
  /** Stops delivering `onData` until `resume()` (read backpressure). */
  pause(): void;
  /** Resumes delivering `onData`. */
  resume(): void;
  /**
   * Sends what is queued, then closes; `onClose` follows. With `linger` (the default) it
   * half-closes first and goes on reading (the driver drops what arrives) until the peer closes
   * or a short linger time passes, so that the kernel does not answer late input with a reset,
   * which could destroy the response in flight. Without it, the connection closes as soon as the
   * queue is sent.
   *
   * @param linger The driver's choice: false when the client is not expected to send more.
   */
  end(linger?: boolean): void;
  /** Closes at once, dropping queued bytes. `onClose` follows. */
  destroy(): void;
  /**
   * Only on a listener started with `deferTls`: begins the TLS handshake on this plain
   * connection, after bytes already read from it (a PROXY protocol header), and once it completes
   * calls `accept` with the encrypted connection. This one delivers no more data from the call on.
   *
   * @param leftover Bytes read past what the caller consumed: the start of the handshake.
   * @param accept Takes the encrypted connection and returns its events.
   */
  startTls?(leftover: Uint8Array, accept: (secure: TransportConnection) => ConnectionEvents): void;
}

/** What a transport adapter tells the server about one connection. */
export interface ConnectionEvents {
  /** Bytes arrived. The chunk is the server's from now on: the adapter never reuses its memory. */
  onData(chunk: Uint8Array): void;
  /** The peer half-closed: no more bytes will arrive. */
  onEnd(): void;
  /** The queued bytes fell below the high-water mark. */
  onDrain(): void;
  /** The connection is closed, by either side or by an error. Called once, last. */
  onClose(): void;
}

/** The name of a built-in transport adapter, and of the runtime it is for. */
export type TransportName = "deno" | "bun" | "node";

/** Bytes queued for a client before `write` asks the driver to wait: Node's stream default. */
const WRITE_HIGH_WATER = 64 * 1024;
/**
 * How long a closing connection keeps reading and dropping input before it is torn down, the
 * idea of nginx's `lingering_close` (whose `lingering_time` default is 30 s and
 * `lingering_timeout` 5 s); 2 s covers a request already in flight on any sane network.
 */
const LINGER_MILLISECONDS = 2000;

/** Events for a connection the server turned away: everything is ignored. */
const IGNORED_EVENTS: ConnectionEvents = {
  onData() {},
  onEnd() {},
  onDrain() {},
  onClose() {},
};

//#endregion
//#region Connection driver

// Theory of operation. One HttpConnection per accepted connection, and one field, #state, says
// what it is doing; every transition is in a method named for it, and each transition arms the
// deadlines of the state it enters and clears those of the state it leaves. Each kind of deadline
// has its own field (0 = off), so turning one off (Infinity) never turns another off.
//
//   state          waits for                               deadlines armed
//   READING_HEAD   the first byte of a head                idle
//                  the rest of a head                      head
//                  the client to read queued responses     write
//   ANSWERING      the handler's Response                  handler
//                  (and the body, while the handler reads) body (between body bytes)
//                  the client to read a streamed body      write
//   DISCARDING     the rest of a body nobody reads         body
//   SWITCHED       nothing: another protocol owns it       (its own)
//   CLOSING        the last bytes to go out                closing (writeTimeout + linger)
//   CLOSED         nothing                                 none
//
//   READING_HEAD ─head─► ANSWERING ─response sent─► READING_HEAD (body complete)
//                                                 ─► DISCARDING ─body done─► READING_HEAD
//                                                 ─► SWITCHED (a 101 with switchProtocols)
//   any ─error, close decided─► CLOSING ─transport closed─► CLOSED;  any ─destroy─► CLOSED
//
// Whether a response keeps the connection is decided once, by shouldKeepAlive (in the core).
//
// The connection sequences parts with one job each, defined below in the order a request meets
// them; each holds its own deadline:
//   InputBuffer   the unread input, parsed where it lies; HeadReader (in the core) finds heads in it
//   RequestBody   Content-Length or chunked decoding, maxBodyBytes, the stream the handler reads
//                 (its pull sends the 100 Continue and resumes reading); the body deadline
//   Exchange      one request and its response: the Request, the handler and onError, reading the
//                 response body ahead, writing it whole or streamed; the handler deadline
//   OutputQueue   batching writes, backpressure, drain waiters; the write deadline
// The idle, head and closing deadlines are the connection's own. The parts never change the
// state: they tell the connection (RequestBody: bodyWanted; Exchange: responded, exchangeFailed,
// exchangeBroken), and the connection makes the transition.

/** What the server writes to its log. */
export interface LogEntry {
  /** How bad it is: `"error"` for a failure, `"warn"` for a client or handler that misbehaved. */
  level: "error" | "warn";
  /** What happened, in a sentence: `wireserve: handler failed`. */
  message: string;
  /** The error behind it, when there is one. */
  error?: unknown;
}

/**
 * The time source of a server's deadlines: the current time, and a repeating tick on which every
 * connection's deadlines are checked. Tests pass a manual one to make timeouts deterministic.
 */
export interface Clock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  /**
   * Calls `tick` every `milliseconds` until the returned function is called.
   *
   * @param milliseconds The period.
   * @param tick What to call.
   * @returns A function that stops the ticks.
   */
  every(milliseconds: number, tick: () => void): () => void;
}

/** The real clock: `Date.now` and `setInterval`. */
const SYSTEM_CLOCK: Clock = {
  now: () => Date.now(),
  every(milliseconds, tick) {
    const interval = setInterval(tick, milliseconds);
    return () => clearInterval(interval);
  },
};

/**
 * The time as the driver reads it many times per request: set once per sweep, so reading it
 * costs nothing, and the `Date` field value, formatted once per second of the clock.
 */
class CoarseClock {
  now: number;
  #clock: Clock;
  #dateSecond = -1;
  #date = "";

  constructor(clock: Clock) {
    this.#clock = clock;
    this.now = clock.now();
  }

  /** Reads the clock (once per sweep). */
  update(): number {
    return this.now = this.#clock.now();
  }

  /** The `Date` field value now (RFC 9110 §6.6.1), from the clock itself, cached per second. */
  get date(): string {
    const second = Math.floor(this.#clock.now() / 1000);
    if (second !== this.#dateSecond) {
      this.#dateSecond = second;
      this.#date = new Date(second * 1000).toUTCString();
    }
    return this.#date;
  }
}

/** The options the connection driver works with, all resolved. */
interface DriverOptions extends Limits, Timeouts {
  /** The same limits as a set of their own, for each connection's reader and chunked decoder. */
  limits: Limits;
  handler: Handler<ConnInfo<Addr>>;
  onError: (error: unknown, request: Request) => Response | Promise<Response>;
  log: (entry: LogEntry) => void;
  maxRequestsPerConnection: number;
  abortOnDisconnect: boolean;
  clock: CoarseClock;
  accessLog: AccessLog | null;
}

/** What the access log will say of the request in progress, gathered as it is answered. */
interface ExchangeRecord {
  /** `Date.now()` and `performance.now()` when the head had arrived. */
  time: number;
  started: number;
  /** The parsed head; null for a request line the parser refused. */
  head: RequestHead | null;
  /**
   * The client: the peer, read as the head arrives (Bun's socket forgets its peer once closed),
   * or the address trusted proxies forwarded, once the request is built.
   */
  client: string;
  /** The escaped request line. */
  line: string;
  /** The status sent; 0 before the response head is. */
  status: number;
  bytes: number;
  reason: AccessLogReason | null;
}

/**
 * How much of an unread request body the server reads and drops after a response, rather than
 * closing: nginx reads up to its whole `client_max_body_size` when discarding, node:http drains
 * any amount; a quarter MiB lets a small unread upload keep its connection, and costs little.
 */
const MAX_DISCARD_BYTES = 256 * 1024;

/** Microtask turns to wait for a response body read before treating the body as a live stream. */
const BODY_READ_TURNS = 12;

/**
 * Macrotask turns a response body may take, in all, on top of the microtask turns. Node's `Blob`
 * stream (and so `File` and `FormData` bodies) answers a read only after one: without them a
 * Blob went out chunked on Node and with `Content-Length` on Deno and Bun (bench/NOTES.md). A live
 * stream waits this long before its head is sent.
 */
const BODY_READ_MACROTASKS = 2;

/** The most of a response body read ahead to send it with `Content-Length` in one write. */
const MAX_BODY_PREFIX_BYTES = 1024 * 1024;

/**
 * Output up to this size is copied into one array for one write (a head with its body, pipelined
 * responses). Past it, copying costs more than another write: the pieces go out as they are.
 */
const MAX_COALESCED_BYTES = 128 * 1024;
/**
 * Where the transport gathers writes (`writeMany`), the most output still copied into one array
 * (a body after its head, pipelined responses): past it, gathering costs less than the copy
 * (bench/NOTES.md).
 */
const MAX_GATHERED_INLINE_BYTES = 2 * 1024;

/**
 * Bytes of unread input to hold while a request is answered (pipelined requests, or bytes behind
 * a body), before the socket is paused: the default high-water mark of a Node stream, as
 * node:http pauses its socket past it; Deno.serve (hyper) reads ahead in 8–400 KiB buffers.
 */
const MAX_PIPELINE_BACKLOG = 64 * 1024;

const EMPTY = new Uint8Array(0);

/** The connection is waiting for (the rest of) a request head. */
const READING_HEAD = 0;
/** A request is being answered; its body may still be arriving. */
const ANSWERING = 1;
/** The response is sent; the rest of the request body is being read and dropped. */
const DISCARDING_BODY = 2;
/** Another protocol owns the connection; events are passed on to it. */
const SWITCHED = 3;
/** The last bytes are going out; nothing more is read or answered. */
const CLOSING = 4;
/** The transport is closed. */
const CLOSED = 5;

/** The private reason a response body stops: the connection went away under it. */
class ConnectionGone extends Error {
  constructor() {
    super("Cannot send response body: the connection is closed");
  }
}

/** A response body read ahead: the chunks available at once, and whether they are all of it. */
interface BodyPrefix {
  chunks: Uint8Array[];
  length: number;
  done: boolean;
  /** The read still in flight when `done` is false and the stream did not answer in time. */
  pending: Promise<ReadableStreamReadResult<Uint8Array>> | null;
  /** The reader the rest of the body comes from. */
  reader: ReadableStreamDefaultReader<Uint8Array> | null;
}

/**
 * What a protocol handler gets when the driver hands it a connection, after the 101 response
 * that {@linkcode switchProtocols} marked is written.
 */
export interface ProtocolSwitch {
  /** The connection. From now on only the new protocol writes to it. */
  readonly transport: TransportConnection;
  /** Bytes that arrived after the request head: the new protocol's first bytes. May be empty. */
  readonly buffered: Uint8Array;
  /** The request that asked for the switch. */
  readonly request: Request;
  /** The connection's addresses. */
  readonly info: ConnInfo<Addr>;
  /** The server's clock now, as its sweep passes to `checkTimers`. */
  readonly now: number;
  /** The server's log (`onLog`), for what the protocol has to report. */
  readonly log: (entry: LogEntry) => void;
}

/**
 * The events of a connection another protocol owns, with two more than a transport delivers: the
 * server's deadline sweep, and a graceful close when the server shuts down.
 */
export interface SwitchedConnection extends ConnectionEvents {
  /**
   * Called on each of the server's timer sweeps, with its clock, for the protocol's own deadlines.
   *
   * @param now The clock, in milliseconds.
   */
  checkTimers?(now: number): void;
  /** The server is shutting down: close gracefully (it drops the connection after `shutdownTimeout`). */
  close?(): void;
}

/** Takes over a connection after a 101 response; returns what the transport's events go to. */
export type ProtocolHandler = (takeover: ProtocolSwitch) => SwitchedConnection;

/**
 * A 101 response on every runtime, and the protocol it switches to. The Fetch standard's
 * `Response` takes only statuses 200-599 (Node and Bun enforce it; Deno lets its own WebSocket
 * upgrade through), so the status is this subclass's own, the same everywhere.
 */
class SwitchingProtocolsResponse extends Response {
  readonly protocol: ProtocolHandler;

  constructor(protocol: ProtocolHandler, headers?: HeadersInit) {
    super(null, { status: 200, headers });
    this.protocol = protocol;
  }

  override get status(): number {
    return 101;
  }

  override get statusText(): string {
    return "Switching Protocols";
  }

  override get ok(): boolean {
    return false;
  }
}

/**
 * Makes a `101 Switching Protocols` response that hands the connection to another protocol: once
 * the server has written its head, the connection, and any bytes that came after the request
 * head, go to `handler`, and HTTP steps out of the way (RFC 9110 §7.8, §15.2.2). The request
 * handler returns it as usual. This is the seam a protocol such as WebSocket is built on. A 101
 * made any other way is answered 500.
 *
 * The request must be HTTP/1.1 (a server must not switch an HTTP/1.0 request) and its body, if it
 * had one, read to the end; otherwise the client gets a 500 instead.
 *
 * @param handler Takes the connection over.
 * @param headers The 101's fields, with its `Upgrade`; `Connection: upgrade` is added.
 * @returns The 101 response (a `Response` whose `status` is 101 on every runtime).
 *
 * @example
 * ```ts
 * import { serve, switchProtocols } from "jsr:@wireserve/wireserve";
 * serve({ port: 0 }, () =>
 *   switchProtocols(({ transport, buffered }) => {
 *     if (buffered.length > 0) transport.write(buffered.slice());
 *     return {
 *       onData: (chunk) => void transport.write(chunk),
 *       onEnd: () => transport.end(false),
 *       onDrain() {},
 *       onClose() {},
 *     };
 *   }, { upgrade: "echo" }));
 * ```
 */
export function switchProtocols(handler: ProtocolHandler, headers?: HeadersInit): Response {
  return new SwitchingProtocolsResponse(handler, headers);
}

/**
 * The key of the exchange a request is being answered in, for what a handler does with its
 * connection beyond returning a response (interim responses, a protocol switch). A symbol property on the request
 * rather than a WeakMap: it costs nothing measurable per request, where a WeakMap did
 * (bench/NOTES.md), and it goes with its request.
 */
const EXCHANGE: unique symbol = Symbol("wireserve.exchange");

/** Whether `serve` parsed `request`, and so writes its response itself (not `Deno.serve`, say). */
function answeredHere(request: Request): boolean {
  return (request as unknown as { [EXCHANGE]?: Exchange })[EXCHANGE] !== undefined;
}

/**
 * Sends a `103 Early Hints` response (RFC 8297) ahead of the final response to `request`, so a
 * client can start fetching what the final response will link to while the handler is still
 * working on it. Call it from the handler before it returns; call it more than once to send more
 * hints. Node's `response.writeEarlyHints` is the prior art.
 *
 * Nothing is sent, and it returns false, when a 103 would be wrong or cannot reach the client: an
 * HTTP/1.0 request (RFC 9110 §15.2: no 1xx to HTTP/1.0 clients), a response that has begun
 * (once the handler returned), a connection already closing, or a request that `serve` did not
 * parse (under `Deno.serve` or `Bun.serve`, say, so that a handler that sends hints runs
 * everywhere). On a pipelined connection the hints follow the responses to earlier requests and
 * come before this one's, in order.
 *
 * Browsers act on hints only over HTTP/2 and later: Chromium ignores a 103 on HTTP/1.1 (its
 * `docs/early-hints.md`), though it parses it. Over HTTP/1.1 they serve curl, Node's `http`
 * client (its `'information'` event), proxies and CDNs that pass hints on over HTTP/2.
 *
 * @param request The request being answered, as the handler received it.
 * @param headers The hint fields, usually `Link` (e.g. `</style.css>; rel=preload; as=style`).
 * Hop-by-hop fields are dropped.
 * @returns True if the 103 was queued to send.
 * @throws {TypeError} For a header name or value that `Headers` rejects.
 *
 * @example
 * ```ts
 * import { sendEarlyHints, serve } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, async (request) => {
 *   sendEarlyHints(request, { link: "</style.css>; rel=preload; as=style" });
 *   await new Promise((resolve) => setTimeout(resolve, 50)); // render the page
 *   return new Response("<link rel=stylesheet href=/style.css>", {
 *     headers: { "content-type": "text/html" },
 *   });
 * });
 * ```
 */
export function sendEarlyHints(request: Request, headers: HeadersInit): boolean {
  const exchange = (request as unknown as { [EXCHANGE]?: Exchange })[EXCHANGE];
  if (exchange === undefined) return false;
  const bytes = serializeResponseHead(103, new Headers(headers), {
    framing: NO_BODY,
    close: false,
    version: 1,
  });
  return exchange.sendInterim(bytes);
}

/**
 * What a handler learns about its connection. The addresses are read from the transport when the
 * handler asks for them (a system call on Node), not for every connection; a class rather than an
 * object of getter closures, because every idle connection holds one.
 */
class ConnectionInfo implements ConnInfo<Addr> {
  #transport: TransportConnection;
  readonly secure: boolean;

  constructor(transport: TransportConnection) {
    this.#transport = transport;
    this.secure = transport.secure;
  }

  get remoteAddr(): Addr {
    return this.#transport.remoteAddr;
  }

  get localAddr(): Addr {
    return this.#transport.localAddr;
  }

  get proxy(): ProxyInfo | undefined {
    return this.#transport.proxy;
  }
}

/**
 * A request body as it arrives: Content-Length counted or chunked decoded, held to `maxBodyBytes`,
 * and handed to the stream the handler reads. It is that stream's underlying source (so the
 * stream needs no closures), and it asks for bytes only as the handler reads: each read tells the
 * connection (`bodyWanted`), which sends a 100 Continue, resumes reading and runs the body
 * deadline. It decides nothing about the connection: after each `feed` the connection reads
 * `done`, `error` and `backedUp`.
 */
class RequestBody implements UnderlyingDefaultSource<Uint8Array> {
  /** The body has ended: all of it arrived, or it failed (`error`). */
  done = false;
  /** Why the body failed: a broken rule, its limit, a timeout, or the client leaving. */
  error: HttpError | null = null;
  /** The request asked for a `100 Continue` (RFC 9110 §10.1.1) before it sends the body. */
  readonly expectContinue: boolean;
  continueSent = false;
  /**
   * The body deadline: when the next bytes must have come (0: off, or nobody waits for them). It
   * runs while the handler waits on a read, and while a body nobody reads is discarded.
   */
  deadline = 0;
  /** Whether the last `feed` handed bytes to the handler's stream. */
  #delivered = false;
  /** The handler's stream; null when there is none (a GET's body, one cancelled or abandoned). */
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  /** Bytes still expected, for Content-Length framing. */
  #remaining: number;
  #decoder: ChunkedDecoder | null;
  /** The chunk data of one `feed`, for chunked framing: one list per body, reused. */
  #pieces: Uint8Array[] | null = null;
  /** Decoded bytes so far, for chunked framing (Content-Length was checked against the limit). */
  #received = 0;
  #options: DriverOptions;
  #connection: HttpConnection;

  constructor(
    framing: Framing,
    expectContinue: boolean,
    options: DriverOptions,
    connection: HttpConnection,
  ) {
    this.expectContinue = expectContinue;
    this.#remaining = framing.kind === "length" ? framing.length : 0;
    this.#decoder = framing.kind === "chunked" ? new ChunkedDecoder(options.limits) : null;
    this.#options = options;
    this.#connection = connection;
  }

  /** Arms the body deadline: the next bytes must come within bodyTimeout. */
  expect(): void {
    this.deadline = deadlineAfter(this.#options.clock.now, this.#options.bodyTimeout);
  }

  /** The stream the handler reads, which asks for bytes only as it is read. */
  stream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>(this, { highWaterMark: 0 });
  }

  /** The stream's start: keeps its controller. */
  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.#controller = controller;
  }

  /** The stream's pull: the handler reads. */
  pull(): void {
    this.#connection.bodyWanted(this);
  }

  /** The stream's cancel: the handler wants no more; the rest is read and dropped. */
  cancel(): void {
    this.#controller = null;
    this.#connection.bodyCancelled();
  }

  /**
   * Bytes of the body still to come: Infinity when unknown (chunked), or when they are held back
   * for a 100 Continue not sent (the client may send them or not).
   */
  get unreadBytes(): number {
    if (this.done) return 0;
    return this.#decoder !== null || (this.expectContinue && !this.continueSent)
      ? Infinity
      : this.#remaining;
  }

  /** Whether the handler's stream is full: it is not reading, so the socket should not be. */
  get backedUp(): boolean {
    const controller = this.#controller;
    return controller !== null && !this.done && (controller.desiredSize ?? 0) < 0;
  }

  /**
   * Takes body bytes from `buffer[start, end)` and hands them to the stream; returns how many
   * were taken. A body that breaks a rule or its limit fails (`error`), taking them all.
   */
  feed(buffer: Uint8Array, start: number, end: number): number {
    const consumed = this.#take(buffer, start, end);
    // A read answered stops the clock until the handler asks again (pull); a read still waiting
    // gets a new bodyTimeout from these bytes.
    if (this.done || this.#delivered) this.deadline = 0;
    else if (this.deadline !== 0) this.expect();
    return consumed;
  }

  /** The decoding and delivery of `feed`, without the deadline. */
  #take(buffer: Uint8Array, start: number, end: number): number {
    this.#delivered = false;
    if (this.done) return 0;
    const controller = this.#controller;
    const decoder = this.#decoder;
    if (decoder === null) {
      // Content-Length: one view of the bytes, no decoding, no list.
      const consumed = Math.min(this.#remaining, end - start);
      this.#remaining -= consumed;
      this.done = this.#remaining === 0;
      if (controller !== null) {
        try {
          if (consumed > 0) {
            controller.enqueue(buffer.subarray(start, start + consumed));
            this.#delivered = true;
          }
          if (this.done) controller.close();
        } catch { /* the handler cancelled the stream; the bytes are dropped */ }
      }
      return consumed;
    }
    const pieces = this.#pieces ??= []; // the decoder appends views of the chunk data
    let consumed: number;
    try {
      consumed = decoder.decode(buffer, start, end, pieces);
    } catch (error) {
      this.fail(error as HttpError);
      return end - start;
    }
    this.done = decoder.done;
    for (const piece of pieces) this.#received += piece.length;
    if (this.#received > this.#options.maxBodyBytes) {
      this.fail(
        new HttpError(
          "BODY_TOO_LARGE",
          `Cannot read body: more than ${this.#options.maxBodyBytes} bytes`,
        ),
      );
      return end - start;
    }
    if (controller !== null) {
      try {
        for (const piece of pieces) {
          if (piece.length > 0) {
            controller.enqueue(piece);
            this.#delivered = true;
          }
        }
        if (this.done) controller.close();
      } catch { /* the handler cancelled the stream; the bytes are dropped */ }
    }
    pieces.length = 0; // the stream holds the views now, or nobody does
    return consumed;
  }

  /** Ends the body with an error, which the handler's stream reports to its reader. */
  fail(error: HttpError): void {
    if (this.error !== null) return;
    this.error = error;
    this.done = true;
    this.deadline = 0;
    try {
      this.#controller?.error(error);
    } catch { /* already closed */ }
  }

  /**
   * The response went out before the body was read: the rest is read and dropped, not delivered,
   * and a reader still waiting (a task the handler left behind) learns so instead of waiting
   * forever.
   */
  abandon(): void {
    try {
      this.#controller?.error(new Error("Cannot read body: the response was sent before it"));
    } catch { /* already closed or cancelled */ }
    this.#controller = null;
  }
}

/**
 * The unread input of a connection, `bytes[start, end)`. While nothing is pending it is the chunk
 * just received, parsed where it lies; bytes that must wait for more are copied into an array of
 * its own, which grows.
 */
class InputBuffer {
  bytes: Uint8Array = EMPTY;
  start = 0;
  end = 0;
  /** Whether views of `bytes` were handed out (to a body stream): it is never written again. */
  shared = false;
  /** Whether `bytes` was allocated here, so bytes may be appended in place. */
  #own = false;

  /** Appends `chunk[offset..]` to the unread input. */
  append(chunk: Uint8Array, offset: number): void {
    const length = chunk.length - offset;
    if (this.start === this.end) {
      // Nothing pending: parse the chunk where it lies.
      this.bytes = chunk;
      this.start = offset;
      this.end = chunk.length;
      this.#own = false;
      this.shared = false;
      return;
    }
    const pending = this.end - this.start;
    if (this.#own && !this.shared && this.end + length <= this.bytes.length) {
      this.bytes.set(chunk.subarray(offset), this.end);
      this.end += length;
      return;
    }
    const grown = new Uint8Array(Math.max(4096, (pending + length) * 2));
    grown.set(this.bytes.subarray(this.start, this.end));
    grown.set(chunk.subarray(offset), pending);
    this.bytes = grown;
    this.start = 0;
    this.end = pending + length;
    this.#own = true;
    this.shared = false;
  }

  /**
   * Lets the bytes go when nothing is unread: they may be a view of a shared slab, which an idle
   * connection should not keep alive.
   */
  release(): void {
    this.bytes = EMPTY;
    this.start = this.end = 0;
  }

  /** A copy of what is unread (for the protocol a connection switches to), and lets go of it. */
  take(): Uint8Array {
    const unread = this.end > this.start ? this.bytes.slice(this.start, this.end) : EMPTY;
    this.release();
    return unread;
  }
}

/**
 * The output queue of a connection: bytes queued by the exchange and written together at a flush
 * (pipelined responses, a head with its body), the transport's backpressure, and the write
 * deadline that bounds a wait for the client to read.
 */
class OutputQueue {
  /** Whether the transport still takes writes: false once it is closed. */
  writable = true;
  /** The transport's last write said its queue is over the high-water mark; no drain since. */
  blocked = false;
  /** Bytes queued and not yet written. */
  bytes = 0;
  /** Whether the transport gathers several pieces into one write: no need to copy them into one. */
  readonly gathers: boolean;
  /** The write deadline: the client must read what is queued by then (0: not waiting, or off). */
  deadline = 0;
  #pieces: Uint8Array[] = [];
  #transport: TransportConnection;
  #options: DriverOptions;
  /** Writers waiting for a drain (rare: only a client slower than the response). */
  #drainWaiters: Array<() => void> | null = null;

  constructor(transport: TransportConnection, options: DriverOptions) {
    this.#transport = transport;
    this.#options = options;
    this.gathers = transport.writeMany !== undefined;
  }

  /** Queues bytes; they go out at the next flush. */
  send(bytes: Uint8Array): void {
    this.#pieces.push(bytes);
    this.bytes += bytes.length;
  }

  /** Writes the queued bytes, in one write when small; false when the transport asks to wait. */
  flush(): boolean {
    const pieces = this.#pieces;
    if (pieces.length === 0 || !this.writable) return this.writable;
    const transport = this.#transport;
    let writable: boolean;
    if (pieces.length === 1) writable = transport.write(pieces[0]);
    else if (this.gathers && this.bytes > MAX_GATHERED_INLINE_BYTES) {
      writable = transport.writeMany!(pieces); // small pieces are cheaper copied together
    } else if (this.bytes <= MAX_COALESCED_BYTES) {
      writable = transport.write(concat(pieces, this.bytes));
    } else {
      writable = true;
      for (const piece of pieces) writable = transport.write(piece) && writable;
    }
    pieces.length = 0; // reused: the pieces were copied out or handed over
    this.bytes = 0;
    if (!writable) this.blocked = true;
    return writable;
  }

  /** Flushes and waits for the transport to drain if it asks to. Resolves false once closed. */
  async flushAndWait(): Promise<boolean> {
    if (this.flush()) return this.writable;
    if (!this.writable) return false; // closed: no drain will ever come
    this.expectDrain();
    await new Promise<void>((resolve) => (this.#drainWaiters ??= []).push(resolve));
    this.deadline = 0;
    return this.writable;
  }

  /** Arms the write deadline: the client has writeTimeout to read what is queued. */
  expectDrain(): void {
    this.deadline = deadlineAfter(this.#options.clock.now, this.#options.writeTimeout);
  }

  /** The transport drained (or closed): wakes the writers waiting for it. */
  drained(): void {
    this.deadline = 0;
    this.blocked = false;
    const waiters = this.#drainWaiters;
    if (waiters !== null) {
      this.#drainWaiters = null;
      for (const wake of waiters) wake();
    }
  }
}

/** Milliseconds from `now` as a deadline; 0 (off) for Infinity. */
function deadlineAfter(now: number, milliseconds: number): number {
  return milliseconds === Infinity ? 0 : now + milliseconds;
}

/**
 * The access log's entry for a finished record: a request never answered is a 499 (nginx's code
 * for a client that left first) of no bytes.
 */
function accessLogEntry(record: ExchangeRecord, reason: AccessLogReason | null): AccessLogEntry {
  const head = record.head;
  let referer: string | null = null;
  let userAgent: string | null = null;
  if (head !== null) {
    for (const [name, value] of head.headers) {
      if (name === "referer") referer = value;
      else if (name === "user-agent") userAgent = value;
    }
  }
  return {
    time: record.time,
    client: record.client,
    request: record.line,
    method: head === null ? null : head.method,
    target: head === null ? null : head.target,
    version: head === null ? null : head.version === 1 ? "HTTP/1.1" : "HTTP/1.0",
    status: record.status === 0 ? 499 : record.status,
    bytes: record.status === 0 ? 0 : record.bytes,
    referer,
    userAgent,
    duration: performance.now() - record.started,
    reason: reason ?? record.reason,
  };
}

/**
 * A new access log record for a request whose head has arrived, or (head null) one the parser
 * refused, whose request line is then given as read from the raw bytes.
 */
function exchangeRecord(head: RequestHead | null, peer: string, line = ""): ExchangeRecord {
  return {
    time: Date.now(),
    started: performance.now(),
    head,
    client: peer,
    line: head === null
      ? line
      : escapeLogField(`${head.method} ${head.target} HTTP/1.${head.version}`),
    status: 0,
    bytes: 0,
    reason: null,
  };
}

/**
 * The `Request` a handler sees for a parsed head: the effective request URL (RFC 9112 §3.3), the
 * method, the head's fields, and the body: as a stream, or as the bytes when it came whole.
 */
function buildRequest(
  head: RequestHead,
  info: ConnInfo<Addr>,
  body: RequestBody | Uint8Array | null,
  signal: AbortSignal | null,
): Request {
  const url = effectiveRequestUrl(
    head,
    info.secure,
    head.host === "" ? authorityOf(info.localAddr) : "",
  );
  // A GET or HEAD body has no meaning (RFC 9110 §9.3.1) and fetch's Request cannot carry one:
  // it is read and dropped to keep the framing.
  const { method } = head;
  const streamBody = body !== null && method !== "GET" && method !== "HEAD";
  let request: Request;
  try {
    if (signal !== null) {
      const init: RequestInit & { duplex?: "half" } = { method, signal };
      if (streamBody) {
        init.body = body instanceof Uint8Array ? body as BodyInit : body.stream();
        init.duplex = "half";
      }
      request = new Request(url, init);
    } else {
      // The smallest init each runtime takes: no init at all for a GET.
      request = method === "GET" ? new Request(url) : new Request(
        url,
        !streamBody
          ? { method }
          : body instanceof Uint8Array
          ? { method, body: body as BodyInit }
          : { method, body: body.stream(), duplex: "half" } as RequestInit,
      );
    }
  } catch {
    throw new HttpError(
      "INVALID_TARGET",
      `Cannot build request URL from ${JSON.stringify(url.slice(0, 64))}`,
    );
  }
  if (request.method !== method) {
    throw new HttpError(
      "METHOD_NOT_IMPLEMENTED",
      `Cannot serve method ${JSON.stringify(method)} on this runtime`,
    );
  }
  // Appending to the request's own Headers costs about half of what converting a headers init
  // does, on every runtime (bench/NOTES.md). The fields were validated by the parser.
  const fields = request.headers;
  const { headers } = head;
  for (let i = 0; i < headers.length; i++) fields.append(headers[i][0], headers[i][1]);
  return request;
}

/**
 * One request and its response: builds the `Request`, calls the handler (and `onError` when it
 * fails), holds the handler deadline, reads what the response body has ready, and writes the
 * response whole or streamed through the connection's output queue. What the response means for
 * the connection (keep it, drop the rest of the body, close, switch protocols) it leaves to the
 * connection, through the few methods of the connection's "what the exchange asks" region.
 */
class Exchange {
  readonly head: RequestHead;
  readonly request: Request;
  /** The handler deadline: when the handler must have answered (0: answered, or off). */
  deadline: number;
  /** Whether the response head has been queued: no 100 Continue or 103 may follow it. */
  responseStarted = false;
  #body: RequestBody | null;
  /** The access log's record of this request (the connection's; null without an access log). */
  #record: ExchangeRecord | null;
  /** Aborts the request's `signal` if the client goes away (with `abortOnDisconnect`). */
  #abort: AbortController | null;
  #connection: HttpConnection;
  #output: OutputQueue;
  #options: DriverOptions;
  #info: ConnInfo<Addr>;

  constructor(
    connection: HttpConnection,
    output: OutputQueue,
    options: DriverOptions,
    info: ConnInfo<Addr>,
    head: RequestHead,
    body: RequestBody | null,
    wholeBody: Uint8Array | null,
    record: ExchangeRecord | null,
  ) {
    this.#connection = connection;
    this.#output = output;
    this.#options = options;
    this.#info = info;
    this.head = head;
    this.#body = body;
    this.#record = record;
    this.#abort = options.abortOnDisconnect ? new AbortController() : null;
    this.request = buildRequest(head, info, wholeBody ?? body, this.#abort?.signal ?? null);
    (this.request as unknown as { [EXCHANGE]?: Exchange })[EXCHANGE] = this;
    this.deadline = deadlineAfter(options.clock.now, options.handlerTimeout);
  }

  /** Whether the request is HTTP/1.1: only then may 1xx responses precede the final one. */
  get isHttp11(): boolean {
    return this.head.version === 1;
  }

  /**
   * Sends an interim response (a 103) ahead of the final response: only while this request is
   * the one being answered, its response not started, and it is HTTP/1.1.
   */
  sendInterim(bytes: Uint8Array): boolean {
    if (!this.#connection.isAnswering(this) || this.responseStarted || !this.isHttp11) {
      return false;
    }
    this.#output.send(bytes);
    this.#output.flush(); // now: the point is to be early
    return true;
  }

  /** The client went away (its FIN, or the connection closed): the request's signal aborts. */
  clientLeft(): void {
    this.#abort?.abort(new HttpError("UNEXPECTED_EOF", "The client closed the connection"));
    this.#abort = null;
  }

  /** Calls the handler and writes its response, or the error that replaces it. Never rejects. */
  async answer(): Promise<void> {
    const request = this.request;
    let response: Response;
    try {
      const result = this.#options.handler(request, this.#info);
      if (result instanceof Promise) {
        this.#output.flush(); // earlier pipelined responses should not wait for a slow handler
        response = await result;
      } else {
        response = result;
      }
      if (!(response instanceof Response)) {
        throw new TypeError(
          `Cannot send response: the handler returned ${typeof response}, not a Response`,
        );
      }
      if (response.type === "error") {
        throw new TypeError("Cannot send response: the handler returned Response.error()");
      }
      if (response.status === 101) this.#checkSwitch(response);
    } catch (error) {
      response = await this.#handlerFailed(error);
    }
    // Read what the body has ready before anything is sent: a body that fails at once (or yields
    // something other than bytes) can still be answered with a 500 instead of a cut connection.
    let prefix: BodyPrefix;
    try {
      // No body, or a FastResponse's: no await.
      const read = readBodyPrefix(response);
      prefix = read instanceof Promise ? await read : read;
    } catch (error) {
      // A body that was read from is locked to its reader, which readAvailable has cancelled.
      if (!response.bodyUsed) response.body?.cancel().catch(() => {});
      response = await this.#handlerFailed(error);
      try {
        prefix = await readBodyPrefix(response);
      } catch {
        prefix = EMPTY_PREFIX;
      }
    }
    this.deadline = 0;
    const connection = this.#connection;
    const body = this.#body;
    if (body !== null && body.error !== null) {
      // The request was broken (body too large, bad chunk): that is the answer, not the handler's.
      prefix.reader?.cancel().catch(() => {});
      connection.exchangeFailed(body.error);
      return;
    }
    if (!connection.isAnswering(this)) {
      prefix.reader?.cancel().catch(() => {}); // answered for it already (503), or closed
      return;
    }
    let streaming: Promise<void> | undefined;
    try {
      // A response whose body was read whole is written at once: no await, no promise.
      streaming = this.#writeResponse(response, prefix);
    } catch (error) {
      // Its head cannot be serialized (a status text with CR LF, which Bun's Response accepts),
      // and not a byte of it was written: a handler failure like any other, answered by onError.
      prefix.reader?.cancel().catch(() => {});
      response = await this.#handlerFailed(error);
      try {
        streaming = this.#writeResponse(response, await readBodyPrefix(response));
      } catch {
        response = plainResponse(500); // onError's answer cannot be sent either
        streaming = this.#writeResponse(response, await readBodyPrefix(response));
      }
    }
    try {
      if (streaming !== undefined) await streaming;
    } catch (error) {
      connection.exchangeFailed(error);
      return;
    }
    connection.responded(
      this,
      response instanceof SwitchingProtocolsResponse ? response.protocol : null,
    );
  }

  /**
   * A 101 is sent only for a switch the handler set up with switchProtocols, on a request that
   * can switch: HTTP/1.1 (RFC 9110 §7.8: not for HTTP/1.0), its body read to the end.
   */
  #checkSwitch(response: Response): void {
    if (!(response instanceof SwitchingProtocolsResponse)) {
      throw new TypeError("Cannot send response: a 101 needs switchProtocols() to make it");
    }
    if (!this.isHttp11) {
      throw new TypeError("Cannot switch protocols: the request is HTTP/1.0");
    }
    if (this.#body !== null && !this.#body.done) {
      throw new TypeError("Cannot switch protocols: the request body was not read to its end");
    }
  }

  /** Turns a handler failure into a response via `onError`, or a plain 500 if that fails too. */
  async #handlerFailed(error: unknown): Promise<Response> {
    if (this.#record !== null) this.#record.reason = "HANDLER_ERROR";
    try {
      const response = await this.#options.onError(error, this.request);
      if (response instanceof Response) return response;
    } catch { /* fall through to the plain 500 */ }
    return plainResponse(500);
  }

  /**
   * Writes a handler's response with the framing it calls for. Returns a promise only when the
   * writing goes on (a live body stream, or one to cancel first). Throws, having sent nothing,
   * when the head cannot be serialized.
   */
  #writeResponse(response: Response, prefix: BodyPrefix): Promise<void> | undefined {
    const head = this.head;
    const connection = this.#connection;
    const output = this.#output;
    this.responseStarted = true;
    const upgrade = response.status === 101;
    const status = response.status;
    if (this.#record !== null) this.#record.status = status;
    // A held file's fields serialized already, unless someone asked for its Headers (none of them
    // is Connection); otherwise the Headers, which is then made if it was not.
    const held = response instanceof FastResponse ? pendingHeld(response) : null;
    const fieldText = held === null ? null : held.fields;
    const headers = fieldText === null ? response.headers : null;
    const keepAlive = upgrade ||
      (connection.keepsAlive(head) && (headers === null || !asksToClose(headers)));
    const hasBody = prefix !== BODYLESS; // the Response has a body (which HEAD does not send)
    let bodyLength: number | null = prefix.done ? prefix.length : null;
    let declaredLength: number | undefined;
    if (bodyLength === null) {
      // A stream with a declared length (a file, say) keeps it; the driver holds it to that length.
      const declared = response.headers.get("content-length");
      if (declared !== null) {
        try {
          declaredLength = parseContentLength(declared);
          bodyLength = declaredLength;
        } catch { /* not a usable length: send chunked */ }
      }
    }
    const { framing, close } = responseFraming({
      method: head.method,
      version: head.version,
      keepAlive,
      status,
      bodyLength,
    });
    const headOptions: SerializeResponseHeadOptions = {
      statusText: response.statusText,
      framing,
      close,
      version: head.version,
      date: this.#options.clock.date,
      upgrade,
    };
    if (framing.kind === "none") {
      if (head.method === "HEAD") {
        const length = headContentLength(
          hasBody ? bodyLength : undefined,
          hasBody ? null : response.headers.get("content-length"),
        );
        if (length !== undefined) headOptions.contentLength = length;
      }
      // Serialized first: a head that cannot be is thrown from here, before anything is sent.
      const bytes = serializeHead(status, headers, fieldText, headOptions);
      const sendHead = () => {
        output.send(bytes);
        if (close) connection.closeAfterResponse();
      };
      if (prefix.reader === null) {
        sendHead();
        return;
      }
      return prefix.reader.cancel().catch(() => {}).then(sendHead);
    }
    if (close) connection.closeAfterResponse();
    if (this.#record !== null && prefix.done) this.#record.bytes = prefix.length;
    if (prefix.done) {
      if (
        held !== null && !close && head.version === 1 && framing.kind === "length" &&
        prefix.length === held.bytes.length
      ) {
        // A held file over keep-alive HTTP/1.1, whose head changes only with the Date: the whole
        // response made already this second, or made now and kept.
        const date = headOptions.date ?? "";
        output.send(
          held.date === date && held.response !== null
            ? held.response
            : held.remake(serializeHead(status, null, fieldText, headOptions), date),
        );
        return;
      }
      // A small body goes out in one array with its head; a large one after it, in the same write
      // where the transport gathers pieces (Node's writev, Bun's reused array), else in a write of
      // its own.
      const inline =
        prefix.length <= (output.gathers ? MAX_GATHERED_INLINE_BYTES : MAX_COALESCED_BYTES);
      if (inline) {
        headOptions.body = prefix.chunks.length === 1
          ? prefix.chunks[0]
          : concat(prefix.chunks, prefix.length);
      }
      output.send(serializeHead(status, headers, fieldText, headOptions));
      if (!inline) { for (const chunk of prefix.chunks) output.send(chunk); }
      return;
    }
    // A live stream: send as it comes, with backpressure.
    output.send(serializeHead(status, headers, fieldText, headOptions));
    return this.#streamBody(prefix, framing, declaredLength);
  }

  /** Sends a response body of unknown length chunk by chunk, waiting whenever the client lags. */
  async #streamBody(
    prefix: BodyPrefix,
    framing: Framing,
    declaredLength: number | undefined,
  ): Promise<void> {
    const reader = prefix.reader as ReadableStreamDefaultReader<Uint8Array>;
    const output = this.#output;
    let sent = 0;
    const sendPiece = async (piece: Uint8Array): Promise<void> => {
      if (!(piece instanceof Uint8Array)) {
        throw new TypeError("Cannot send response body: a chunk is not a Uint8Array");
      }
      if (piece.length === 0) return;
      sent += piece.length;
      if (this.#record !== null) this.#record.bytes = sent;
      if (declaredLength !== undefined && sent > declaredLength) {
        throw new TypeError(
          `Cannot send response body: longer than its Content-Length ${declaredLength}`,
        );
      }
      output.send(framing.kind === "chunked" ? encodeChunk(piece) : piece);
      if (!await output.flushAndWait()) throw new ConnectionGone();
    };
    try {
      for (const piece of prefix.chunks) await sendPiece(piece);
      let pending = prefix.pending;
      while (true) {
        const result = await (pending ?? reader.read());
        pending = null;
        if (result.done) break;
        await sendPiece(result.value);
      }
      if (declaredLength !== undefined && sent !== declaredLength) {
        throw new TypeError(
          `Cannot send response body: ${sent} bytes, but Content-Length is ${declaredLength}`,
        );
      }
      if (framing.kind === "chunked") output.send(LAST_CHUNK);
      if (framing.kind === "close") this.#connection.closeAfterResponse();
    } catch (error) {
      // The body failed or the client left: the message cannot be completed, so the connection ends
      // without a proper end of body, which tells the client the response is incomplete.
      reader.cancel(error).catch(() => {});
      const gone = error instanceof ConnectionGone;
      if (this.#connection.isAnswering(this) && !gone) {
        this.#options.log({
          level: "error",
          message: "wireserve: response body stream failed",
          error,
        });
      }
      this.#connection.exchangeBroken(gone ? "CLIENT_LEFT" : "BODY_STREAM_FAILED");
    }
  }
}

/**
 * The HTTP/1.1 state machine of one connection (see the theory of operation above): it feeds
 * input to the head reader and the request body, starts one `Exchange` per request, one at a
 * time and strictly in order, and makes every state transition its parts report.
 */
class HttpConnection implements ConnectionEvents {
  #transport: TransportConnection;
  #options: DriverOptions;
  #info: ConnInfo<Addr>;
  #onClosed: (connection: HttpConnection) => void;
  #state = READING_HEAD;
  // Its parts, in the order a request meets them (see the theory of operation).
  #input = new InputBuffer();
  #headReader: HeadReader;
  #body: RequestBody | null = null;
  /** The request being answered, in ANSWERING (and past it, in CLOSING, if it was cut short). */
  #exchange: Exchange | null = null;
  #output: OutputQueue;
  // What it knows of the request in progress, and of the reading and writing around it.
  #requestCount = 0;
  /** Whether the request in progress is a HEAD: an error answering it carries no body either. */
  #answeringHead = false;
  /** The access log's record of the request in progress (null when there is no access log). */
  #record: ExchangeRecord | null = null;
  /** Whether the request in progress asked to close the connection after its response. */
  #clientClosing = false;
  #peerEnded = false;
  /** The server decided to close after the current response (shutdown, request cap, framing). */
  #closeRequested = false;
  /** Reading waits for the handler, which is not reading the body. */
  #paused = false;
  /** Reading waits for the client: too much unread input is buffered behind the response. */
  #backlogPaused = false;
  /**
   * Whether the transport is paused: while either reason above holds. Two reasons, one switch, so
   * that one reason ending never resumes reading another still holds (see #applyReading).
   */
  #transportPaused = false;
  /** Responses are queued past the high-water mark: read no further request until they drain. */
  #awaitingDrain = false;
  /** The protocol that owns the connection in SWITCHED. */
  #switched: SwitchedConnection | null = null;
  // One deadline per kind, each 0 when off (see the theory of operation).
  #idleDeadline = 0;
  #headDeadline = 0;
  #closingDeadline = 0;

  constructor(
    transport: TransportConnection,
    options: DriverOptions,
    onClosed: (connection: HttpConnection) => void,
  ) {
    this.#transport = transport;
    this.#output = new OutputQueue(transport, options);
    this.#options = options;
    this.#onClosed = onClosed;
    this.#info = new ConnectionInfo(transport);
    this.#headReader = new HeadReader(options.limits);
    this.#idleDeadline = deadlineAfter(options.clock.now, options.idleTimeout);
  }

  //#region what the server and the transport call

  /** Checks the deadlines against the clock; called by the server's sweep. */
  checkTimers(now: number): void {
    const state = this.#state;
    if (state === CLOSED) return;
    if (state === SWITCHED) {
      this.#switched?.checkTimers?.(now);
      return;
    }
    if (this.#closingDeadline !== 0 && now >= this.#closingDeadline) {
      // The last bytes had writeTimeout (and the linger) to go out: drop the connection.
      this.#closingDeadline = 0;
      this.#destroy("WRITE_TIMEOUT");
      return;
    }
    if (state === CLOSING) return;
    const output = this.#output;
    if (output.deadline !== 0 && now >= output.deadline) {
      output.deadline = 0;
      this.#destroy("WRITE_TIMEOUT"); // the client stopped reading the response
      return;
    }
    const body = this.#body;
    if (body !== null && body.deadline !== 0 && now >= body.deadline) {
      this.#bodyFailed(
        body,
        new HttpError("TIMEOUT", "Cannot read body: the client stopped sending it"),
      );
    }
    const exchange = this.#exchange;
    if (
      exchange !== null && exchange.deadline !== 0 && now >= exchange.deadline &&
      this.#state === ANSWERING
    ) {
      // The handler is stuck. Answer for it; whatever it returns later is dropped.
      exchange.deadline = 0;
      this.#options.log({ level: "warn", message: "wireserve: handler timed out" });
      this.#sendError(503, "HANDLER_TIMEOUT");
      return;
    }
    if (this.#headDeadline !== 0 && now >= this.#headDeadline && this.#state === READING_HEAD) {
      this.#headDeadline = 0;
      this.#fail(new HttpError("TIMEOUT", "Cannot read head: the client took too long to send it"));
      return;
    }
    if (this.#idleDeadline !== 0 && now >= this.#idleDeadline && this.#state === READING_HEAD) {
      this.#idleDeadline = 0;
      this.#closeNow();
    }
  }

  /** The client's address, for per-client accounting. */
  get remoteHost(): string {
    return addressName(this.#info.remoteAddr);
  }

  /** Drops the connection at once (shutdown's grace period is over). */
  destroy(): void {
    this.#destroy("SHUTDOWN");
  }

  /** Whether no request is in progress: shutdown may close this connection at once. */
  get idle(): boolean {
    return this.#state === READING_HEAD && this.#input.end === this.#input.start;
  }

  /** Asks the connection to close: at once when idle, after the current response otherwise. */
  close(): void {
    this.#closeRequested = true;
    if (this.#state === SWITCHED) { // the protocol closes in its own way (WebSocket: 1001)
      this.#switched?.close?.();
      return;
    }
    // A head that has begun to arrive is a request in progress: it is answered (with
    // Connection: close), within the shutdown grace period.
    if (this.idle) this.#closeNow();
  }

  onData(chunk: Uint8Array): void {
    const state = this.#state;
    if (state === SWITCHED) {
      this.#switched?.onData(chunk);
      return;
    }
    const body = this.#body;
    // After a broken body nothing more is read: it could be anything, including a smuggled request.
    if (state >= CLOSING || chunk.length === 0 || body?.error) return;
    let offset = 0;
    if (body !== null && !body.done && this.#input.end === this.#input.start) {
      // Body bytes go straight from the chunk to the body stream, without a copy.
      offset = this.#feedBody(chunk, 0, chunk.length, true);
      if (this.#state >= CLOSING) return;
    }
    if (offset < chunk.length) this.#input.append(chunk, offset);
    if (this.#state === READING_HEAD && !this.#awaitingDrain) {
      this.#processInput();
    } else if (this.#input.end - this.#input.start > MAX_PIPELINE_BACKLOG && !this.#backlogPaused) {
      // Answering, or waiting for the client to read: hold a little, then stop reading, so that
      // a client that sends and never reads cannot make the server buffer without bound.
      this.#backlogPaused = true;
      this.#applyReading();
    }
  }

  /** Pauses or resumes the transport to match #paused and #backlogPaused. */
  #applyReading(): void {
    const pause = this.#paused || this.#backlogPaused;
    if (pause === this.#transportPaused) return;
    this.#transportPaused = pause;
    if (pause) this.#transport.pause();
    else this.#transport.resume();
  }

  onEnd(): void {
    if (this.#state === SWITCHED) {
      this.#switched?.onEnd();
      return;
    }
    this.#peerEnded = true;
    // As node:http does, a client's FIN while its request is answered counts as leaving: the
    // response is still sent, but a handler that listens can stop its work.
    this.#exchange?.clientLeft();
    const body = this.#body;
    if (body !== null && !body.done) {
      this.#bodyFailed(
        body,
        new HttpError("UNEXPECTED_EOF", "Cannot read body: the client closed the connection"),
      );
    } else if (this.#state === READING_HEAD && !this.#awaitingDrain) {
      // Complete pipelined requests still buffered are answered first; #processInput closes once
      // nothing but (at most) a head cut short is left, for nobody is left to read an error.
      if (this.#input.end > this.#input.start) this.#processInput();
      else this.#closeNow();
    }
  }

  onDrain(): void {
    if (this.#state === SWITCHED) {
      this.#switched?.onDrain();
      return;
    }
    this.#output.drained();
    if (this.#awaitingDrain && this.#state === READING_HEAD) {
      this.#awaitingDrain = false;
      this.#idleDeadline = deadlineAfter(this.#options.clock.now, this.#options.idleTimeout);
      this.#processInput();
    }
  }

  onClose(): void {
    const switched = this.#state === SWITCHED ? this.#switched : null;
    this.#state = CLOSED;
    this.#output.writable = false;
    this.#clearDeadlines();
    this.#closingDeadline = 0;
    if (switched !== null) {
      this.#switched = null;
      switched.onClose();
      this.#onClosed(this);
      return;
    }
    const body = this.#body;
    if (body !== null && !body.done) {
      body.fail(new HttpError("UNEXPECTED_EOF", "Cannot read body: the connection closed"));
    }
    this.onDrain();
    this.#exchange?.clientLeft();
    if (this.#record !== null) this.#logExchange("CLIENT_LEFT");
    this.#onClosed(this);
  }

  //#endregion
  //#region input: heads, and the request body

  /** Parses and answers the requests in the unread input, in order, until one must wait. */
  #processInput(): void {
    if (this.#awaitingDrain) return;
    const reader = this.#headReader;
    const input = this.#input;
    try {
      while (this.#state === READING_HEAD && !this.#awaitingDrain) {
        const head = reader.read(input.bytes, input.start, input.end);
        input.start += reader.consumed;
        if (head === null) {
          // Nobody is left to send the rest of a head, nor to read an error about it.
          if (this.#peerEnded) this.#closeNow();
          break;
        }
        this.#startRequest(head);
      }
    } catch (error) {
      this.#fail(error);
    }
    if (
      this.#backlogPaused && !this.#awaitingDrain &&
      (this.#state === READING_HEAD || input.end - input.start <= MAX_PIPELINE_BACKLOG)
    ) {
      // What is held is the start of a head (bounded by maxHeadBytes), or no more than the
      // backlog while a request is answered (its body may be still to come): read again.
      this.#backlogPaused = false;
      this.#applyReading();
    }
    if (this.#state !== READING_HEAD) return;
    const now = this.#options.clock.now;
    if (input.end > input.start) {
      // Part of a head is here: the head deadline runs from its first byte to its end.
      this.#idleDeadline = 0;
      if (this.#headDeadline === 0) {
        this.#headDeadline = deadlineAfter(now, this.#options.headTimeout);
      }
    } else {
      input.release(); // nothing unread: an idle connection holds no bytes

      this.#headDeadline = 0;
      if (this.#idleDeadline === 0 && !this.#awaitingDrain) {
        this.#idleDeadline = deadlineAfter(now, this.#options.idleTimeout);
      }
    }
    this.#output.flush();
  }

  /** READING_HEAD → ANSWERING: sets up the body, and hands the request to the handler. */
  #startRequest(head: RequestHead): void {
    this.#requestCount++;
    if (this.#options.accessLog !== null) {
      this.#record = exchangeRecord(head, addressName(this.#info.remoteAddr));
    }
    const { method } = head;
    this.#answeringHead = method === "HEAD";
    this.#clientClosing = !head.keepAlive;
    this.#headDeadline = this.#idleDeadline = 0;
    if (!SERVED_METHODS.has(method)) {
      throw new HttpError(
        "METHOD_NOT_IMPLEMENTED",
        `Cannot serve method ${JSON.stringify(method.slice(0, 32))}`,
      );
    }
    const { framing } = head;
    if (framing.kind === "length" && framing.length > this.#options.maxBodyBytes) {
      throw new HttpError(
        "BODY_TOO_LARGE",
        `Cannot read body: Content-Length ${framing.length} is over ${this.#options.maxBodyBytes}`,
      );
    }
    const hasBody = framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0);
    const input = this.#input;
    // A body that came whole with its head needs no stream to arrive through: the Request gets
    // the bytes (where the runtime profile says that is cheaper), and the connection moves on.
    let wholeBody: Uint8Array | null = null;
    if (
      WHOLE_BODY_BYTES && framing.kind === "length" && framing.length > 0 &&
      input.end - input.start >= framing.length && method !== "GET" && method !== "HEAD"
    ) {
      wholeBody = input.bytes.subarray(input.start, input.start + framing.length);
      input.start += framing.length;
      input.shared = true;
    }
    const body = hasBody && wholeBody === null
      ? new RequestBody(framing, head.expectContinue, this.#options, this)
      : null;
    this.#body = body;
    this.#state = ANSWERING;
    // OPTIONS * asks about the server itself (RFC 9110 §9.3.7): there is no resource to hand over.
    const exchange = head.target === "*" ? null : new Exchange(
      this,
      this.#output,
      this.#options,
      this.#info,
      head,
      body,
      wholeBody,
      this.#record,
    );
    this.#exchange = exchange;
    // The body bytes that came with the head go to the body stream, which the Request made.
    if (body !== null && input.end > input.start) {
      input.start += this.#feedBody(input.bytes, input.start, input.end, false);
    }
    if (exchange === null) {
      this.#answerAsterisk(head);
      return;
    }
    const record = this.#record;
    if (record !== null) {
      // Behind trusted proxies the log names the forwarded client, which needs the Request.
      const trusting = (this.#options.accessLog as AccessLog).client;
      if (trusting !== null) record.client = trusting(exchange.request, this.#info);
    }
    void exchange.answer(); // it never rejects: failures end in exchangeFailed
  }

  /**
   * The handler reads the request body (its stream's pull): the client may now need a
   * `100 Continue`, reading resumes, and the body deadline runs until bytes come.
   */
  bodyWanted(body: RequestBody): void {
    if (
      body.expectContinue && !body.continueSent && !body.done && this.#output.writable &&
      this.#exchange?.responseStarted === false
    ) {
      // RFC 9110 §10.1.1: the client waits for this before sending the body.
      body.continueSent = true;
      this.#output.send(CONTINUE_BYTES);
      this.#output.flush();
    }
    this.#bodyUnblocked();
    if (!body.done) body.expect();
  }

  /** The handler cancelled the request body's stream: the rest is read (and dropped). */
  bodyCancelled(): void {
    this.#bodyUnblocked();
  }

  /** Nobody is left to read the request body slowly: reading resumes. */
  #bodyUnblocked(): void {
    if (this.#paused) {
      this.#paused = false;
      this.#applyReading();
    }
  }

  /**
   * Feeds body bytes from `buffer[start, end)`; returns how many were consumed. `fresh` says the
   * bytes are a chunk just received, so views of it may be handed out as they are.
   */
  #feedBody(buffer: Uint8Array, start: number, end: number, fresh: boolean): number {
    const body = this.#body as RequestBody;
    if (body.done) return 0;
    const consumed = body.feed(buffer, start, end);
    if (body.error !== null) {
      this.#bodyFailed(body, body.error);
      return consumed;
    }
    if (!fresh) this.#input.shared = true;
    if (body.backedUp && !this.#paused) {
      // The handler is not reading: stop reading the socket until it does.
      this.#paused = true;
      this.#applyReading();
    }
    if (body.done) this.#bodyFinished();
    return consumed;
  }

  /** The request body is complete: if the response is already sent, go on to the next request. */
  #bodyFinished(): void {
    if (this.#state === DISCARDING_BODY) {
      // DISCARDING → READING_HEAD
      this.#body = null;
      this.#state = READING_HEAD;
      this.#idleDeadline = deadlineAfter(this.#options.clock.now, this.#options.idleTimeout);
      if (this.#closeRequested) this.#closeNow();
      else queueMicrotask(() => this.#processInput());
    }
  }

  /** The request body broke a rule or was cut off. */
  #bodyFailed(body: RequestBody, error: HttpError): void {
    body.fail(error);
    if (this.#state === DISCARDING_BODY) {
      this.#closeNow();
    } else if (this.#peerEnded && error.code === "UNEXPECTED_EOF") {
      // Nobody is left to read an answer.
      this.#closeNow();
    }
    // While answering, the exchange sees body.error and sends its status instead of the handler's.
  }

  //#endregion
  //#region what the exchange asks of its connection

  /** Whether `exchange` is the one being answered, on a connection still open. */
  isAnswering(exchange: Exchange): boolean {
    return this.#state === ANSWERING && this.#exchange === exchange;
  }

  /** Whether this exchange keeps the connection open: the core's truth table, fed from here. */
  keepsAlive(head: RequestHead): boolean {
    const body = this.#body;
    const unreadBodyBytes = body !== null && !body.done ? body.unreadBytes : 0;
    return shouldKeepAlive({
      clientKeepAlive: head.keepAlive,
      serverClose: this.#closeRequested ||
        this.#requestCount >= this.#options.maxRequestsPerConnection,
      // A client that half-closed after pipelining more requests still gets all the answers.
      clientGone: this.#peerEnded && this.#input.end === this.#input.start,
      unreadBodyBytes,
      maxDiscardBytes: MAX_DISCARD_BYTES,
    });
  }

  /** The response makes the connection close once it is written. */
  closeAfterResponse(): void {
    this.#closeRequested = true;
  }

  /** The request or its response broke a rule: answered with its status if it can still be. */
  exchangeFailed(error: unknown): void {
    this.#fail(error);
  }

  /** A response body stream failed, or the client left under it: the connection is dropped. */
  exchangeBroken(reason: AccessLogReason): void {
    this.#destroy(reason);
  }

  /** The response is written: a 101's connection goes to `protocol`; else the next request. */
  responded(exchange: Exchange, protocol: ProtocolHandler | null): void {
    if (protocol !== null) this.#switchProtocols(protocol, exchange.request);
    else this.#finishExchange();
  }

  //#endregion
  //#region transitions

  /** After a response: close, drop the rest of the body, or read the next request. */
  #finishExchange(readNext = true): void {
    this.#exchange = null; // the exchange is complete: a later disconnect aborts nothing
    if (this.#record !== null) this.#logExchange(null);
    this.#answeringHead = false;
    if (this.#state >= CLOSING) return;
    if (this.#closeRequested || this.#body?.error) {
      this.#closeNow();
      return;
    }
    const body = this.#body;
    if (body !== null && !body.done) {
      // ANSWERING → DISCARDING. The rest is read and dropped.
      body.abandon();
      this.#state = DISCARDING_BODY;
      body.expect();
      this.#output.flush();
      this.#bodyUnblocked();
      return;
    }
    // ANSWERING → READING_HEAD
    this.#body = null;
    this.#state = READING_HEAD;
    // Pipelined responses go out together, but a client that does not read them must not make
    // the server answer (and buffer) request after request: once the transport's queue is past
    // its high-water mark, read no further request until it drains (input past the backlog
    // limit then pauses the socket, so neither direction grows without bound).
    const output = this.#output;
    const blocked = output.bytes >= WRITE_HIGH_WATER ? !output.flush() : output.blocked;
    if (blocked && output.writable) {
      this.#awaitingDrain = true;
      output.expectDrain();
      return;
    }
    this.#idleDeadline = deadlineAfter(this.#options.clock.now, this.#options.idleTimeout);
    if (readNext) this.#processInput();
  }

  /**
   * ANSWERING → SWITCHED: the 101 is written; the transport, and the bytes read past the head, go
   * to the new protocol. From now on this object only passes the transport's events on.
   */
  #switchProtocols(protocol: ProtocolHandler, request: Request): void {
    this.#output.flush();
    this.#clearDeadlines();
    this.#exchange = null;
    if (this.#record !== null) this.#logExchange(null);
    this.#body = null;
    const buffered = this.#input.take();
    this.#state = SWITCHED;
    this.#paused = this.#backlogPaused = false;
    this.#applyReading();
    try {
      this.#switched = protocol({
        transport: this.#transport,
        buffered,
        request,
        info: this.#info,
        now: this.#options.clock.now,
        log: this.#options.log,
      });
    } catch (error) {
      this.#options.log({ level: "error", message: "wireserve: protocol switch failed", error });
      this.#destroy();
      return;
    }
    // A shutdown that began while the 101 was being answered reaches the new protocol too.
    if (this.#closeRequested) this.#switched.close?.();
  }

  /** Answers `OPTIONS *` for the server as a whole. */
  #answerAsterisk(head: RequestHead): void {
    const keepAlive = this.keepsAlive(head);
    const headers = new Headers({ allow: ALLOWED_METHODS_HEADER });
    if (this.#record !== null) this.#record.status = 204;
    this.#output.send(
      serializeResponseHead(204, headers, {
        framing: NO_BODY,
        close: !keepAlive,
        version: head.version,
        date: this.#options.clock.date,
      }),
    );
    this.#closeRequested ||= !keepAlive;
    // Answered synchronously: the #processInput loop that called us goes on to the next request
    // (a recursive call per pipelined OPTIONS * would grow the stack without bound).
    this.#finishExchange(false);
  }

  /** Answers a protocol violation with its status, then closes: nothing after it is trusted. */
  #fail(error: unknown): void {
    if (this.#state >= CLOSING) return;
    if (!(error instanceof HttpError)) {
      this.#options.log({ level: "error", message: "wireserve: connection failed", error });
      this.#destroy("CONNECTION_FAILED");
      return;
    }
    this.#sendError(error.status, error.code);
  }

  /** → CLOSING with an error response (for a HEAD request, without its body). */
  #sendError(status: number, reason: AccessLogReason): void {
    const forHead = this.#answeringHead ||
      (this.#state === READING_HEAD &&
        HeadReader.isHeadRequest(this.#input.bytes, this.#input.start, this.#input.end));
    if (this.#options.accessLog !== null) {
      // A request the parser refused has no record yet: its line is taken from the raw bytes.
      const record = this.#record ??= exchangeRecord(
        null,
        addressName(this.#info.remoteAddr),
        loggedRequestLine(this.#input.bytes, this.#input.start, this.#input.end),
      );
      record.status = status;
      record.bytes = forHead ? 0 : statusBody(status).length;
      record.reason = reason;
    }
    this.#state = CLOSING;
    this.#output.send(errorResponseBytes(status, this.#options.clock.date, forHead));
    this.#output.flush();
    this.#endTransport();
    if (this.#record !== null) this.#logExchange(reason);
  }

  /** Hands the record of the request in progress to the access log. */
  #logExchange(reason: AccessLogReason | null): void {
    const record = this.#record as ExchangeRecord;
    this.#record = null;
    (this.#options.accessLog as AccessLog).add(accessLogEntry(record, reason));
  }

  /** → CLOSING: flushes and closes, lingering unless the client has nothing more to send. */
  #closeNow(): void {
    if (this.#state >= CLOSING) return;
    this.#state = CLOSING;
    this.#output.flush();
    // Close outright only when the client itself asked to close and left nothing unread: no
    // request read ahead, no body unread or failed. Then it has no reason to send more, and
    // waiting for its FIN would cost a wake-up, a read and a timer per connection. When the
    // server decides to close (its request cap, shutdown, idle time, an error), the client may be
    // sending its next request right now, and that must not turn into a reset that destroys the
    // response in flight.
    const body = this.#body;
    const clientDone = this.#clientClosing && this.#input.end === this.#input.start &&
      (body === null || (body.done && body.error === null));
    this.#endTransport(!clientDone);
  }

  /** Closes, with writeTimeout (plus the linger) as the bound on a client that never reads. */
  #endTransport(linger = true): void {
    this.#clearDeadlines();
    this.#closingDeadline = deadlineAfter(
      this.#options.clock.now,
      this.#options.writeTimeout + LINGER_MILLISECONDS, // Infinity stays Infinity: off
    );
    // Input is dropped from here on (onData returns in CLOSING); the transport keeps reading it,
    // so that the kernel never answers it with a reset.
    this.#transport.end(linger);
  }

  /** Clears every deadline but the closing one: what they waited for is over. */
  #clearDeadlines(): void {
    this.#idleDeadline = this.#headDeadline = 0;
    if (this.#exchange !== null) this.#exchange.deadline = 0;
    this.#output.deadline = 0;
    if (this.#body !== null) this.#body.deadline = 0;
  }

  /** → CLOSED without ceremony; `reason` is what the access log says of a request cut short. */
  #destroy(reason: AccessLogReason = "CONNECTION_FAILED"): void {
    if (this.#state === CLOSED) return;
    this.#state = CLOSED;
    this.#output.writable = false;
    this.#transport.destroy();
    if (this.#record !== null) this.#logExchange(reason);
  }

  //#endregion
}

/** A response without a body (`body` is null). */
const BODYLESS: BodyPrefix = { chunks: [], length: 0, done: true, pending: null, reader: null };
/** A body of no bytes, or one that could not be read. */
const EMPTY_PREFIX: BodyPrefix = { chunks: [], length: 0, done: true, pending: null, reader: null };

/**
 * The start of a response's body: all of it when it is there at once. A promise only when a stream
 * is read: no body and a FastResponse's body are there already.
 */
function readBodyPrefix(response: Response): BodyPrefix | Promise<BodyPrefix> {
  if (response instanceof FastResponse) {
    const fixed = takeFixedBody(response);
    if (fixed !== undefined) return fixed;
  }
  // Headers first: Bun's Response adds the Content-Type its body implies (FormData,
  // URLSearchParams, Blob, File) only to a Headers object made before the body is read.
  response.headers;
  const stream = response.body;
  return stream === null ? BODYLESS : readAvailable(stream.getReader());
}

/** Reads what a response body has ready within a few turns of the event loop, not waiting on I/O. */
async function readAvailable(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<BodyPrefix> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  let macrotasks = 0;
  while (true) {
    // The result is taken from the callback, not awaited again: one microtask turn less per read.
    let result: ReadableStreamReadResult<Uint8Array> | undefined;
    let failed = false;
    let failure: unknown;
    const read = reader.read();
    read.then((value) => result = value, (error) => {
      failed = true;
      failure = error;
    });
    for (let turn = 0; turn < BODY_READ_TURNS && result === undefined && !failed; turn++) {
      await undefined;
    }
    while (result === undefined && !failed && macrotasks < BODY_READ_MACROTASKS) {
      macrotasks++;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (failed) {
      reader.cancel(failure).catch(() => {}); // its source may hold a file or a socket
      throw failure;
    }
    if (result === undefined) return { chunks, length, done: false, pending: read, reader };
    if (result.done) return { chunks, length, done: true, pending: null, reader };
    const value = result.value;
    if (!(value instanceof Uint8Array)) {
      const error = new TypeError("Cannot send response body: a chunk is not a Uint8Array");
      reader.cancel(error).catch(() => {});
      throw error;
    }
    chunks.push(value);
    length += value.length;
    if (length > MAX_BODY_PREFIX_BYTES) {
      return { chunks, length, done: false, pending: null, reader };
    }
  }
}

/** Concatenates byte arrays of known total length. */
function concat(pieces: Uint8Array[], length: number): Uint8Array {
  const bytes = allocBytes(length);
  let offset = 0;
  for (const piece of pieces) {
    bytes.set(piece, offset);
    offset += piece.length;
  }
  return bytes;
}

/** `host` or `[v6]:port`, for URLs. */
function formatHost(addr: NetAddr): string {
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
}

/**
 * The authority of a request URL that names none (an HTTP/1.0 request without `Host`): the local
 * address, or `localhost` on a Unix socket, as curl writes for `--unix-socket`.
 */
function authorityOf(addr: Addr): string {
  return addr.transport === "tcp" ? formatHost(addr) : "localhost";
}

/** A short plain-text response, for errors and the default 500. */
function plainResponse(status: number, extra?: Record<string, string>): Response {
  return new FastResponse(statusBody(status), {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...extra },
  });
}

/** The body of every plain-text status response: `404 Not Found`; it never echoes the request. */
function statusBody(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? ""}\n`;
}

/**
 * The bytes of an error response with `Connection: close` (for a HEAD request, without its body);
 * the body never echoes the request.
 */
function errorResponseBytes(status: number, date: string, forHead = false): Uint8Array {
  const body = ASCII_ENCODER.encode(statusBody(status));
  const { framing } = responseFraming({
    method: forHead ? "HEAD" : "GET",
    version: 1,
    keepAlive: false,
    status,
    bodyLength: body.length,
  });
  return serializeResponseHead(status, [["content-type", "text/plain; charset=utf-8"]], {
    framing,
    contentLength: body.length, // for HEAD: the length a GET would get
    close: true,
    body: framing.kind === "none" ? undefined : body,
    date,
  });
}

//#endregion
//#region WebSocket

// RFC 6455 on the protocol-switch seam: upgradeWebSocket checks the opening handshake and returns
// a 101 made with switchProtocols; once it is written, a WebSocketConnection owns the transport.
// Below, in the order bytes flow: the pure frame reader and writer, the close-code and handshake
// rules, then the socket object a handler holds (the browser's WebSocket interface, with the
// extensions a server needs: backpressure, ping, terminate).

/** RFC 6455 §1.3: the GUID appended to a client's key to make the accept value. */
const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OPCODE_CONTINUATION = 0x0;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const OPCODE_CLOSE = 0x8;
const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;

/** Close codes (RFC 6455 §7.4.1) this file sends. */
const CLOSE_GOING_AWAY = 1001;
const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_NO_STATUS = 1005;
const CLOSE_ABNORMAL = 1006;
const CLOSE_INVALID_DATA = 1007;
const CLOSE_TOO_BIG = 1009;

/**
 * A peer broke the WebSocket protocol: the connection is failed (RFC 6455 §7.1.7) with `code` in
 * the close frame: 1002 for a framing error, 1007 for text that is not UTF-8, 1009 for a message
 * over the limit.
 */
export class WebSocketError extends Error {
  /** The close code the server sends for it. */
  readonly code: number;

  /**
   * Makes the error of one protocol violation.
   *
   * @param code The close code to send.
   * @param message What was wrong, for the log.
   */
  constructor(code: number, message: string) {
    super(message);
    this.name = "WebSocketError";
    this.code = code;
  }
}

/** The fixed part of one frame, as {@linkcode WebSocketFrameReader} reads it. */
export interface WebSocketFrameHeader {
  /** Whether this frame ends its message. */
  fin: boolean;
  /** RSV1: the message is compressed (permessage-deflate), on its first frame. */
  rsv1: boolean;
  /** 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong. */
  opcode: number;
  /** Payload bytes. */
  length: number;
}

/** Where a {@linkcode WebSocketFrameReader} delivers what it reads. */
export interface WebSocketFrameSink {
  /** A frame's header was read (its payload follows, possibly in several pieces). */
  header(header: WebSocketFrameHeader): void;
  /** Unmasked payload bytes of the current frame: a view of the input, valid until the next push. */
  payload(bytes: Uint8Array): void;
  /** The current frame's payload is complete. */
  end(): void;
}

/** How strict a frame reader is. */
export interface WebSocketFrameReaderOptions {
  /** The largest payload a frame may declare; past it: 1009 before any of it is read. */
  maxPayloadBytes: number;
  /** Whether RSV1 may be set (a compression extension was agreed). */
  allowRsv1?: boolean;
  /** Whether frames must be masked: true for frames from a client (RFC 6455 §5.1). */
  requireMask?: boolean;
}

/**
 * Reads WebSocket frames (RFC 6455 §5.2) from input that arrives in pieces, delivering each
 * payload as it arrives, unmasked in place, so that a long text frame can be checked for UTF-8 as
 * it comes and nothing is copied. It checks everything that does not need the message around it:
 * reserved bits, unknown opcodes, control frames that are fragmented or over 125 bytes, a length
 * not in its minimal form or with the top bit set, a missing mask, a declared length over the
 * limit. A violation throws a {@linkcode WebSocketError} and the reader must not be used again.
 *
 * @example
 * ```ts
 * import { WebSocketFrameReader } from "jsr:@wireserve/wireserve";
 * const reader = new WebSocketFrameReader({ maxPayloadBytes: 1 << 20, requireMask: false }, {
 *   header: (h) => console.log(h.opcode, h.length),
 *   payload: (bytes) => console.log(new TextDecoder().decode(bytes)),
 *   end: () => {},
 * });
 * reader.push(new Uint8Array([0x81, 0x02, 0x68, 0x69])); // 1 2, then "hi"
 * ```
 */
export class WebSocketFrameReader {
  readonly #options: Required<WebSocketFrameReaderOptions>;
  readonly #sink: WebSocketFrameSink;
  /** The header being read: up to 14 bytes. */
  readonly #header = new Uint8Array(14);
  #headerLength = 0;
  /** Payload bytes still to come for the current frame; -1 while reading a header. */
  #remaining = -1;
  readonly #mask = new Uint8Array(4);
  #masked = false;
  /** Payload bytes of the current frame read so far, for the mask's position. */
  #offset = 0;
  /** The declared length of the frame whose header is being read, once checked. */
  #length = 0;
  #lengthKnown = false;

  /**
   * Makes a reader for one connection's frames.
   *
   * @param options The payload limit, whether RSV1 is allowed, whether masks are required.
   * @param sink What receives headers, payloads and frame ends.
   */
  constructor(options: WebSocketFrameReaderOptions, sink: WebSocketFrameSink) {
    this.#options = { allowRsv1: false, requireMask: true, ...options };
    this.#sink = sink;
  }

  /**
   * Reads `chunk`, delivering what it completes. The chunk's bytes are unmasked in place.
   *
   * @param chunk The next input bytes.
   * @throws {WebSocketError} For a frame that breaks RFC 6455.
   */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#remaining < 0) {
        at = this.#readHeader(chunk, at);
        continue;
      }
      const take = Math.min(this.#remaining, chunk.length - at);
      const piece = chunk.subarray(at, at + take);
      if (this.#masked) unmask(piece, this.#mask, this.#offset);
      this.#offset += take;
      this.#remaining -= take;
      at += take;
      if (take > 0) this.#sink.payload(piece);
      if (this.#remaining === 0) this.#endFrame();
    }
  }

  /** Reads header bytes from `chunk[at..]`; returns where it stopped. */
  #readHeader(chunk: Uint8Array, at: number): number {
    const header = this.#header;
    // The first two bytes say how long the header is: 2, plus 2 or 8 for the length, plus 4 for
    // the mask.
    while (this.#headerLength < 2 && at < chunk.length) header[this.#headerLength++] = chunk[at++];
    if (this.#headerLength < 2) return at;
    const first = header[0];
    const second = header[1];
    if (!this.#lengthKnown) this.#checkFirstBytes(first, second); // once per header: idempotent
    const length7 = second & 0x7f;
    const lengthBytes = length7 === 126 ? 2 : length7 === 127 ? 8 : 0;
    const masked = (second & 0x80) !== 0;
    // The length is checked as soon as its bytes are here, before the mask (fail fast).
    const lengthEnd = 2 + lengthBytes;
    while (this.#headerLength < lengthEnd && at < chunk.length) {
      header[this.#headerLength++] = chunk[at++];
    }
    if (this.#headerLength < lengthEnd) return at;
    if (!this.#lengthKnown) {
      this.#length = this.#checkLength(length7);
      this.#lengthKnown = true;
    }
    const size = lengthEnd + (masked ? 4 : 0);
    while (this.#headerLength < size && at < chunk.length) {
      header[this.#headerLength++] = chunk[at++];
    }
    if (this.#headerLength < size) return at;
    const length = this.#length;
    this.#masked = masked;
    if (masked) this.#mask.set(header.subarray(2 + lengthBytes, 6 + lengthBytes));
    this.#headerLength = 0;
    this.#lengthKnown = false;
    this.#offset = 0;
    this.#remaining = length;
    this.#sink.header({
      fin: (first & 0x80) !== 0,
      rsv1: (first & 0x40) !== 0,
      opcode: first & 0x0f,
      length,
    });
    if (length === 0) this.#endFrame();
    return at;
  }

  /** The payload length in the header being read: minimal, in range, within the limit. */
  #checkLength(length7: number): number {
    const header = this.#header;
    let length = length7;
    if (length7 === 126) {
      length = (header[2] << 8) | header[3];
      if (length < 126) throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Frame length not minimal");
    } else if (length7 === 127) {
      const high = ((header[2] << 24) >>> 0) + (header[3] << 16) + (header[4] << 8) + header[5];
      if (high > 0x1fffff) {
        // The top bit must be 0 (§5.2); past 2^53 a number cannot hold it; both are over any limit.
        throw new WebSocketError(
          high >= 0x80000000 ? CLOSE_PROTOCOL_ERROR : CLOSE_TOO_BIG,
          "Frame length out of range",
        );
      }
      const low = ((header[6] << 24) >>> 0) + (header[7] << 16) + (header[8] << 8) + header[9];
      length = high * 0x100000000 + low;
      if (length < 65536) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Frame length not minimal");
      }
    }
    if (length > this.#options.maxPayloadBytes) {
      throw new WebSocketError(
        CLOSE_TOO_BIG,
        `Frame of ${length} bytes is over ${this.#options.maxPayloadBytes}`,
      );
    }
    return length;
  }

  /** The checks the first two bytes allow, made as soon as they are here (fail fast). */
  #checkFirstBytes(first: number, second: number): void {
    const opcode = first & 0x0f;
    if ((first & 0x30) !== 0 || ((first & 0x40) !== 0 && !this.#options.allowRsv1)) {
      throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Reserved bit set");
    }
    if (opcode > OPCODE_BINARY && opcode < OPCODE_CLOSE || opcode > OPCODE_PONG) {
      throw new WebSocketError(CLOSE_PROTOCOL_ERROR, `Unknown opcode ${opcode}`);
    }
    if (opcode >= OPCODE_CLOSE) {
      if ((first & 0x80) === 0) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Fragmented control frame");
      }
      if ((second & 0x7f) > 125) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Control frame over 125 bytes");
      }
      if ((first & 0x40) !== 0) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Reserved bit set on a control frame");
      }
    }
    if (this.#options.requireMask && (second & 0x80) === 0) {
      throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Frame from the client is not masked");
    }
  }

  #endFrame(): void {
    this.#remaining = -1;
    this.#sink.end();
  }
}

/** Whether this machine stores a 32-bit word's low byte first (every one wireserve runs on does). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * XORs `piece` with the 4-byte mask, starting at mask position `offset`, in place: a word at a
 * time over the aligned middle, a byte at a time around it. A byte at a time throughout cost
 * about three times the native servers' CPU per 64 KiB message.
 */
function unmask(piece: Uint8Array, mask: Uint8Array, offset: number): void {
  const length = piece.length;
  let i = 0;
  while (i < length && ((piece.byteOffset + i) & 3) !== 0) {
    piece[i] ^= mask[(offset + i) & 3];
    i++;
  }
  const words = (length - i) >>> 2;
  if (words > 0) {
    const at = offset + i;
    const b0 = mask[at & 3];
    const b1 = mask[(at + 1) & 3];
    const b2 = mask[(at + 2) & 3];
    const b3 = mask[(at + 3) & 3];
    const word = LITTLE_ENDIAN
      ? (b0 | b1 << 8 | b2 << 16 | b3 << 24)
      : (b0 << 24 | b1 << 16 | b2 << 8 | b3);
    const view = new Uint32Array(piece.buffer, piece.byteOffset + i, words);
    for (let w = 0; w < words; w++) view[w] ^= word;
    i += words * 4;
  }
  while (i < length) {
    piece[i] ^= mask[(offset + i) & 3];
    i++;
  }
}

/**
 * Encodes one unmasked frame (a server's, RFC 6455 §5.1) with its payload, in one array.
 *
 * @param opcode 1 text, 2 binary, 8 close, 9 ping, 10 pong (0 for a continuation).
 * @param payload The payload.
 * @param fin Whether the frame ends its message.
 * @param rsv1 Whether the message is compressed (its first frame).
 * @returns The frame's bytes.
 *
 * @example
 * ```ts
 * import { encodeWebSocketFrame } from "jsr:@wireserve/wireserve";
 * encodeWebSocketFrame(1, new TextEncoder().encode("hi")); // 81 02 68 69
 * ```
 */
export function encodeWebSocketFrame(
  opcode: number,
  payload: Uint8Array,
  fin = true,
  rsv1 = false,
): Uint8Array {
  const length = payload.length;
  const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const frame = new Uint8Array(2 + lengthBytes + length);
  frame[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  if (lengthBytes === 0) {
    frame[1] = length;
  } else if (lengthBytes === 2) {
    frame[1] = 126;
    frame[2] = length >>> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 127;
    const view = new DataView(frame.buffer);
    view.setUint32(2, Math.floor(length / 0x100000000));
    view.setUint32(6, length >>> 0);
  }
  frame.set(payload, 2 + lengthBytes);
  return frame;
}

/**
 * Whether a close code may travel in a close frame (RFC 6455 §7.4): 1000-1003, 1007-1014 (the
 * IANA registry's), and 3000-4999 (libraries and applications). 1004-1006 and 1015 are reserved
 * for reporting, never sent.
 *
 * @param code The code.
 * @returns True if it may be sent and received.
 *
 * @example
 * ```ts
 * import { isValidCloseCode } from "jsr:@wireserve/wireserve";
 * isValidCloseCode(1000); // true
 * isValidCloseCode(1005); // false
 * ```
 */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999);
}

/**
 * The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2): the
 * base64 of the SHA-1 of the key and the protocol's GUID.
 *
 * @param key The client's key, as sent.
 * @returns The accept value.
 *
 * @example
 * ```ts
 * import { webSocketAccept } from "jsr:@wireserve/wireserve";
 * webSocketAccept("dGhlIHNhbXBsZSBub25jZQ=="); // "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" (RFC 6455 §1.3)
 * ```
 */
export function webSocketAccept(key: string): string {
  return createHash("sha1").update(key + WEBSOCKET_GUID).digest("base64");
}

/** A base64 value of exactly 16 bytes: 22 characters and `==` (RFC 6455 §4.1). */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

/** Options for {@linkcode upgradeWebSocket}. */
export interface UpgradeWebSocketOptions {
  /**
   * The subprotocol to accept: one the client offered in `Sec-WebSocket-Protocol`. None by default.
   */
  protocol?: string;
  /**
   * The largest message, in bytes, fragments together; past it the connection is closed with
   * 1009. `Bun.serve`'s `maxPayloadLength` is 16 MiB, `ws`'s `maxPayload` 100 MiB.
   * @default {16777216} (16 MiB)
   */
  maxMessageBytes?: number;
  /**
   * Frames one message may come in; past it: 1009. Each fragment costs an entry in memory, so a
   * message of one-byte fragments must not reach millions of them.
   * @default {4096}
   */
  maxFragments?: number;
  /**
   * Bytes `send` may queue for a client that does not read before the socket is dropped (closed
   * without the closing handshake, code 1006): past it the client is not keeping up, and
   * queueing more would only grow the server's memory. `send` returns false, and a `drain`
   * event follows, once the transport's own queue is over its high-water mark (64 KiB), long
   * before. `Bun.serve`'s `backpressureLimit` is 16 MiB; `ws` has none.
   * @default {16777216} (16 MiB)
   */
  maxBufferedBytes?: number;
  /**
   * Milliseconds without a byte from the client before the server pings it; as long again
   * without one and the socket is dropped (code 1006). `Bun.serve` pings after 120 s of silence;
   * `ws` and `Deno.upgradeWebSocket` do not ping by default (Deno's `idleTimeout` is 120 s).
   * `Infinity` turns it off.
   * @default {120000}
   */
  idleTimeout?: number;
  /**
   * Milliseconds the closing handshake may take once a close frame is sent, before the TCP
   * connection is dropped. `ws` waits 30 s.
   * @default {10000}
   */
  closeTimeout?: number;
  /**
   * permessage-deflate (RFC 7692), when the client offers it: `true`, or the smallest message
   * worth compressing and the level. Off by default, as in `ws` and `Bun.serve`
   * (`Deno.upgradeWebSocket` has none): it costs CPU per message and, for a client that keeps
   * its compression context (browsers do), up to 32 KiB of window per socket.
   * @default {false}
   */
  compression?: boolean | WebSocketCompressionOptions;
}

/** The settings of permessage-deflate, for {@linkcode UpgradeWebSocketOptions.compression}. */
export interface WebSocketCompressionOptions {
  /**
   * Messages under this many bytes are sent uncompressed: below it deflate saves little and
   * costs a call. `ws` uses 1 KiB.
   * @default {1024}
   */
  threshold?: number;
  /**
   * The deflate level, 1-9.
   * @default {6}
   */
  level?: number;
}

/** The resolved limits of one WebSocket. */
interface WebSocketSettings {
  maxMessageBytes: number;
  maxFragments: number;
  maxBufferedBytes: number;
  idleTimeout: number;
  closeTimeout: number;
  /** permessage-deflate's settings, or null when it is off. */
  compression: { threshold: number; level: number } | null;
}

/** What was agreed for permessage-deflate with one client. */
interface DeflateAgreement {
  /** The response's `Sec-WebSocket-Extensions` value. */
  header: string;
  /** The server's window: 2^bits (the client may ask for a smaller one). */
  serverWindowBits: number;
  /** Whether the client starts each message with an empty window (no window kept here). */
  clientNoContextTakeover: boolean;
}

/**
 * Chooses the first permessage-deflate offer this server can accept (RFC 7692 §5, §7.1): known
 * parameters only, each at most once, window bits 9-15 (zlib cannot compress with an 8-bit raw
 * window). The server always adds `server_no_context_takeover` (§7.1.1.1 lets it): each message it
 * sends is compressed on its own, so it keeps no compressor state per socket.
 */
function negotiateDeflate(header: string | null): DeflateAgreement | null {
  if (header === null) return null;
  for (const offer of header.split(",")) {
    const [name, ...params] = offer.split(";").map(trimOws);
    if (name.toLowerCase() !== "permessage-deflate") continue;
    const seen = new Set<string>();
    let valid = true;
    let serverWindowBits = 15;
    let clientNoContextTakeover = false;
    for (const param of params) {
      const equals = param.indexOf("=");
      const key = trimOws(equals === -1 ? param : param.slice(0, equals)).toLowerCase();
      let value = equals === -1 ? null : trimOws(param.slice(equals + 1));
      if (value !== null && value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
        value = value.slice(1, -1);
      }
      if (seen.has(key)) valid = false;
      seen.add(key);
      const bits = value !== null && /^(?:9|1[0-5])$/.test(value) ? Number(value) : 0;
      if (key === "server_no_context_takeover" || key === "client_no_context_takeover") {
        if (value !== null) valid = false;
        if (key === "client_no_context_takeover") clientNoContextTakeover = true;
      } else if (key === "server_max_window_bits") {
        if (bits === 0) valid = false;
        serverWindowBits = bits;
      } else if (key === "client_max_window_bits") {
        if (value !== null && !/^(?:[89]|1[0-5])$/.test(value)) valid = false;
      } else {
        valid = false;
      }
    }
    if (!valid) continue;
    let agreed = "permessage-deflate; server_no_context_takeover";
    if (seen.has("server_max_window_bits")) {
      agreed += `; server_max_window_bits=${serverWindowBits}`;
    }
    if (clientNoContextTakeover) agreed += "; client_no_context_takeover";
    return { header: agreed, serverWindowBits, clientNoContextTakeover };
  }
  return null;
}

/** The end of every message compressed with a sync flush, taken off before sending (RFC 7692 §7.2.1). */
const DEFLATE_TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
/** The most a client's window holds: 2^15 bytes. */
const DEFLATE_WINDOW = 32 * 1024;

/**
 * A deflate stored block holding `window`: inflated before a message, it gives the inflater the
 * client's context (the bytes the message may refer back to) on every runtime. zlib's
 * `dictionary` option would do the same, but Deno's inflateRawSync ignores it for raw streams.
 */
function storedBlock(window: Uint8Array): Uint8Array {
  const block = new Uint8Array(5 + window.length);
  block[0] = 0x00; // BFINAL 0, BTYPE 00 (stored), padding to the byte
  block[1] = window.length & 0xff;
  block[2] = window.length >>> 8;
  block[3] = ~window.length & 0xff;
  block[4] = (~window.length >>> 8) & 0xff;
  block.set(window, 5);
  return block;
}

/** What the socket tells the connection that carries it. */
interface WebSocketCarrier {
  send(opcode: number, payload: Uint8Array): boolean;
  close(code: number, reason: string): void;
  terminate(): void;
  ping(payload: Uint8Array): void;
}

/** A `CloseEvent`, where the runtime has one (all three do today), else a plain `Event`. */
function closeEvent(code: number, reason: string, wasClean: boolean): CloseEvent {
  if (typeof CloseEvent === "function") {
    return new CloseEvent("close", { code, reason, wasClean });
  }
  return Object.assign(new Event("close"), { code, reason, wasClean }) as CloseEvent;
}

/** Opens a socket once its connection is switched (set in ServerWebSocket's static block). */
let openSocket: (
  socket: ServerWebSocket,
  carrier: WebSocketCarrier,
  extensions: string,
  log: (entry: LogEntry) => void,
) => void;

/** What a connection tells its socket (set in ServerWebSocket's static block). */
let socketEvents: {
  message(socket: ServerWebSocket, data: string | ArrayBuffer): void;
  closing(socket: ServerWebSocket): void;
  buffered(socket: ServerWebSocket, bytes: number): void;
  drain(socket: ServerWebSocket): void;
  error(socket: ServerWebSocket): void;
  closed(socket: ServerWebSocket, code: number, reason: string, wasClean: boolean): void;
};

/**
 * The server's end of a WebSocket, as {@linkcode upgradeWebSocket} gives it: the standard
 * `WebSocket` interface a browser has (`readyState`, `protocol`, `extensions`, `binaryType`,
 * `bufferedAmount`, `url`, `send`, `close`, the `on…` handlers and `addEventListener` with
 * `MessageEvent`, `CloseEvent` and `Event`), and three extensions a server needs, marked as such:
 * `send` returns whether the message went out without queueing (false: wait for `drain`), `ping()`,
 * and `terminate()`. A listener that throws is logged; the server goes on.
 */
export class ServerWebSocket extends EventTarget {
  /** The connection is being set up (the 101 is not written yet). */
  static readonly CONNECTING = 0;
  /** Messages can be sent and received. */
  static readonly OPEN = 1;
  /** The closing handshake has begun. */
  static readonly CLOSING = 2;
  /** The connection is closed. */
  static readonly CLOSED = 3;
  /** The connection is being set up. */
  readonly CONNECTING = 0;
  /** Messages can be sent and received. */
  readonly OPEN = 1;
  /** The closing handshake has begun. */
  readonly CLOSING = 2;
  /** The connection is closed. */
  readonly CLOSED = 3;

  /** The request's URL with the `ws:` or `wss:` scheme. */
  readonly url: string;
  /** The subprotocol accepted, or `""`. */
  readonly protocol: string;
  /** The extensions agreed, as sent in `Sec-WebSocket-Extensions` (`""`: none). */
  readonly extensions: string = "";
  /** How binary messages are delivered: `"arraybuffer"` (the default) or `"blob"`. */
  binaryType: "arraybuffer" | "blob" = "arraybuffer";
  /** Called when the connection opens. */
  onopen: ((event: Event) => void) | null = null;
  /** Called with each message. */
  onmessage: ((event: MessageEvent) => void) | null = null;
  /** Called once, when the connection is closed. */
  onclose: ((event: CloseEvent) => void) | null = null;
  /** Called when the connection fails, before `close`. */
  onerror: ((event: Event) => void) | null = null;
  /** An extension: called when the send queue drains after `send` returned false. */
  ondrain: ((event: Event) => void) | null = null;

  #readyState = 0;
  /** The origin of `url`, for each MessageEvent. */
  readonly #origin: string;
  #carrier: WebSocketCarrier | null = null;
  #buffered = 0;
  /** Sends waiting for a Blob to be read, so that messages keep their order. */
  #sendChain: Promise<void> | null = null;
  #log: (entry: LogEntry) => void = logToConsole;
  readonly #listeners = new Map<string, Map<unknown, EventListener>>();

  /**
   * Made by {@linkcode upgradeWebSocket}, not by hand: a socket made otherwise never opens.
   *
   * @param url The request's URL with the `ws:` or `wss:` scheme.
   * @param protocol The subprotocol accepted, or `""`.
   */
  constructor(url: string, protocol: string) {
    super();
    this.url = url;
    this.protocol = protocol;
    this.#origin = new URL(url).origin;
  }

  /** CONNECTING, OPEN, CLOSING or CLOSED (0-3). */
  get readyState(): number {
    return this.#readyState;
  }

  /** Bytes of messages sent but queued, not yet handed to the network. */
  get bufferedAmount(): number {
    return this.#buffered;
  }

  /**
   * Sends a message: a string as text, bytes as binary, a Blob as binary once read (in order with
   * the others). After `close()` a message is dropped, as a browser drops it.
   *
   * @param data The message.
   * @returns An extension: true when the message went out without queueing past the transport's
   * high-water mark; false when it was queued (wait for `drain`) or dropped.
   * @throws {DOMException} `InvalidStateError` before the connection is open.
   */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): boolean {
    if (this.#readyState === 0) {
      throw new DOMException("Cannot send: the WebSocket is not open yet", "InvalidStateError");
    }
    if (this.#readyState !== 1 || this.#carrier === null) return false;
    if (this.#sendChain !== null || data instanceof Blob) {
      const chain: Promise<void> = (this.#sendChain ?? Promise.resolve()).then(async () => {
        const bytes = data instanceof Blob ? new Uint8Array(await data.arrayBuffer()) : data;
        if (this.#readyState === 1) this.#sendNow(bytes);
      }).catch((error) =>
        this.#log({ level: "error", message: "wireserve: WebSocket send failed", error })
      )
        .then(() => {
          if (this.#sendChain === chain) this.#sendChain = null;
        });
      this.#sendChain = chain;
      return false;
    }
    return this.#sendNow(data);
  }

  #sendNow(data: string | ArrayBufferLike | ArrayBufferView): boolean {
    const carrier = this.#carrier as WebSocketCarrier;
    if (typeof data === "string") return carrier.send(OPCODE_TEXT, encodeUtf8(data));
    // The frame is a copy: the caller may reuse its buffer.
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    return carrier.send(OPCODE_BINARY, bytes);
  }

  /**
   * Starts the closing handshake (RFC 6455 §7.1.2). The `close` event follows once the client
   * answers (or the close timeout passes).
   *
   * @param code 1000, or 3000-4999; none by default (the frame then carries no code).
   * @param reason At most 123 bytes of UTF-8.
   * @throws {DOMException} `InvalidAccessError` for another code, `SyntaxError` for a longer reason.
   */
  close(code?: number, reason = ""): void {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(
        `Cannot close: code ${code} is not 1000 or 3000-4999`,
        "InvalidAccessError",
      );
    }
    if (encodeUtf8(reason).length > 123) {
      throw new DOMException("Cannot close: the reason is over 123 bytes", "SyntaxError");
    }
    if (this.#readyState >= 2) return;
    if (this.#readyState === 0 || this.#carrier === null) {
      this.#readyState = 2; // closed once the switch happens: it never opens
      return;
    }
    this.#readyState = 2;
    this.#carrier.close(code ?? CLOSE_NO_STATUS, reason);
  }

  /**
   * An extension: sends a ping (RFC 6455 §5.5.2); the client answers with a pong.
   *
   * @param data At most 125 bytes of payload.
   * @throws {RangeError} For a longer payload.
   */
  ping(data: string | Uint8Array = new Uint8Array(0)): void {
    const bytes = typeof data === "string" ? encodeUtf8(data) : data;
    if (bytes.length > 125) throw new RangeError("Cannot ping: the payload is over 125 bytes");
    if (this.#readyState === 1) this.#carrier?.ping(bytes);
  }

  /** An extension: drops the connection at once, without the closing handshake (code 1006). */
  terminate(): void {
    if (this.#readyState === 3) return;
    this.#readyState = 2;
    this.#carrier?.terminate();
  }

  /**
   * Adds a listener, as EventTarget's; one that throws is logged, not thrown into the server.
   *
   * @param type The event type.
   * @param listener The listener (a function or an object with `handleEvent`).
   * @param options As EventTarget's.
   */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (listener === null) return;
    let byListener = this.#listeners.get(type);
    if (byListener === undefined) this.#listeners.set(type, byListener = new Map());
    let guarded = byListener.get(listener);
    if (guarded === undefined) {
      guarded = (event: Event) => {
        try {
          if (typeof listener === "function") listener.call(this, event);
          else listener.handleEvent(event);
        } catch (error) {
          this.#log({
            level: "error",
            message: `wireserve: WebSocket ${type} listener failed`,
            error,
          });
        }
      };
      byListener.set(listener, guarded);
    }
    super.addEventListener(type, guarded, options);
  }

  /**
   * Removes a listener added with {@linkcode ServerWebSocket.addEventListener}.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As EventTarget's.
   */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void {
    const guarded = listener === null ? undefined : this.#listeners.get(type)?.get(listener);
    if (guarded !== undefined) super.removeEventListener(type, guarded, options);
  }

  /** Delivers an event to its `on…` handler, then to the listeners. */
  #emit(event: Event): void {
    const handler = (this as unknown as Record<string, unknown>)[`on${event.type}`];
    if (typeof handler === "function") {
      try {
        handler.call(this, event);
      } catch (error) {
        this.#log({
          level: "error",
          message: `wireserve: WebSocket on${event.type} handler failed`,
          error,
        });
      }
    }
    this.dispatchEvent(event);
  }

  static {
    openSocket = (socket, carrier, extensions, log) => {
      socket.#carrier = carrier;
      socket.#log = log;
      (socket as { extensions: string }).extensions = extensions;
      if (socket.#readyState === 2) {
        // close() before the switch: the closing handshake starts at once.
        carrier.close(CLOSE_NO_STATUS, "");
        return;
      }
      socket.#readyState = 1;
      socket.#emit(new Event("open"));
    };
    socketEvents = {
      message(socket, data) {
        if (socket.#readyState !== 1) return;
        const payload = typeof data === "string" || socket.binaryType === "arraybuffer"
          ? data
          : new Blob([data as ArrayBuffer]);
        socket.#emit(
          new MessageEvent("message", { data: payload, origin: socket.#origin }),
        );
      },
      closing(socket) {
        if (socket.#readyState < 2) socket.#readyState = 2;
      },
      buffered(socket, bytes) {
        socket.#buffered = bytes;
      },
      drain(socket) {
        socket.#emit(new Event("drain"));
      },
      error(socket) {
        socket.#emit(new Event("error"));
      },
      closed(socket, code, reason, wasClean) {
        if (socket.#readyState === 3) return;
        socket.#readyState = 3;
        socket.#carrier = null;
        socket.#emit(closeEvent(code, reason, wasClean));
      },
    };
  }
}

/**
 * A request that cannot be upgraded to a WebSocket, and the answer it should get: 400, or 426
 * with `Sec-WebSocket-Version: 13` for a version this server does not speak (RFC 6455 §4.4).
 */
export class WebSocketUpgradeError extends TypeError {
  /** The status to answer: 400 or 426. */
  readonly status: number;

  /**
   * Makes the error of one refused upgrade.
   *
   * @param status 400 or 426.
   * @param message What is wrong with the request.
   */
  constructor(status: number, message: string) {
    super(message);
    this.name = "WebSocketUpgradeError";
    this.status = status;
  }

  /** The response to send instead of the 101. */
  get response(): Response {
    return plainResponse(this.status, this.status === 426 ? { "sec-websocket-version": "13" } : {});
  }
}

/**
 * Accepts a WebSocket upgrade (RFC 6455 §4.2), with `Deno.upgradeWebSocket`'s shape: the handler
 * returns `response`, the 101, and talks to the client through `socket`. Anything else returned
 * instead means the upgrade was refused, and `socket` never opens.
 *
 * The opening handshake is checked as RFC 6455 §4.2.1 says: a GET, HTTP/1.1, `Upgrade: websocket`,
 * `Connection` listing `upgrade`, a `Sec-WebSocket-Key` of 16 bytes in base64, and
 * `Sec-WebSocket-Version: 13`. A request that fails any of these throws a
 * {@linkcode WebSocketUpgradeError} (a `TypeError`) whose `response` is the answer to give it (400,
 * or 426 for another version); so does a request that `serve` did not parse.
 *
 * @param request The request, as the handler received it.
 * @param options The subprotocol to accept, and the socket's limits.
 * @returns The socket and the 101 response.
 * @throws {WebSocketUpgradeError} For a request that is not a valid upgrade.
 *
 * @example
 * ```ts
 * import { serve, upgradeWebSocket } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, (request) => {
 *   if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") return new Response("hi");
 *   const { socket, response } = upgradeWebSocket(request);
 *   socket.onmessage = (event) => socket.send(event.data);
 *   return response;
 * });
 * ```
 */
export function upgradeWebSocket(
  request: Request,
  options: UpgradeWebSocketOptions = {},
): { socket: ServerWebSocket; response: Response } {
  const exchange = (request as unknown as { [EXCHANGE]?: Exchange })[EXCHANGE];
  if (exchange === undefined) {
    throw new WebSocketUpgradeError(400, "Cannot upgrade: the request did not come from serve()");
  }
  const headers = request.headers;
  if (request.method !== "GET") {
    throw new WebSocketUpgradeError(400, "Cannot upgrade: the method is not GET");
  }
  if (!exchange.isHttp11) {
    throw new WebSocketUpgradeError(400, "Cannot upgrade: the request is HTTP/1.0");
  }
  if (!listsToken(headers.get("upgrade"), "websocket")) {
    throw new WebSocketUpgradeError(400, "Cannot upgrade: Upgrade does not name websocket");
  }
  if (!listsToken(headers.get("connection"), "upgrade")) {
    throw new WebSocketUpgradeError(400, "Cannot upgrade: Connection does not list upgrade");
  }
  const key = headers.get("sec-websocket-key");
  if (key === null || !WEBSOCKET_KEY.test(key)) {
    throw new WebSocketUpgradeError(
      400,
      "Cannot upgrade: Sec-WebSocket-Key is not 16 bytes of base64",
    );
  }
  if (headers.get("sec-websocket-version") !== "13") {
    throw new WebSocketUpgradeError(426, "Cannot upgrade: Sec-WebSocket-Version is not 13");
  }
  const protocol = options.protocol ?? "";
  if (protocol !== "") {
    const offered = (headers.get("sec-websocket-protocol") ?? "").split(",").map(trimOws);
    if (!offered.includes(protocol)) {
      throw new TypeError(
        `Cannot upgrade: the client did not offer the subprotocol ${JSON.stringify(protocol)}`,
      );
    }
  }
  const settings = webSocketSettings(options);
  const url = new URL(request.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new ServerWebSocket(url.href, protocol);
  const fields: Record<string, string> = {
    upgrade: "websocket",
    "sec-websocket-accept": webSocketAccept(key),
  };
  if (protocol !== "") fields["sec-websocket-protocol"] = protocol;
  const deflate = settings.compression === null
    ? null
    : negotiateDeflate(headers.get("sec-websocket-extensions"));
  if (deflate !== null) fields["sec-websocket-extensions"] = deflate.header;
  const response = switchProtocols(
    (takeover) => new WebSocketConnection(takeover, socket, settings, deflate),
    fields,
  );
  return { socket, response };
}

/** Checks and resolves the options of upgradeWebSocket. */
function webSocketSettings(options: UpgradeWebSocketOptions): WebSocketSettings {
  const whole = (name: string, value: number | undefined, fallback: number) => {
    const resolved = value ?? fallback;
    if (!(Number.isInteger(resolved) && resolved >= 1) && resolved !== Infinity) {
      throw new RangeError(`Cannot upgrade: ${name} must be a positive integer, got ${resolved}`);
    }
    return resolved;
  };
  return {
    maxMessageBytes: whole("maxMessageBytes", options.maxMessageBytes, 16 * 1024 * 1024),
    maxFragments: whole("maxFragments", options.maxFragments, 4096),
    maxBufferedBytes: whole("maxBufferedBytes", options.maxBufferedBytes, 16 * 1024 * 1024),
    idleTimeout: whole("idleTimeout", options.idleTimeout, 120_000),
    closeTimeout: whole("closeTimeout", options.closeTimeout, 10_000),
    compression: compressionSettings(options.compression),
  };
}

/** Checks and resolves the compression option of upgradeWebSocket. */
function compressionSettings(
  option: boolean | WebSocketCompressionOptions | undefined,
): { threshold: number; level: number } | null {
  if (option === undefined || option === false) return null;
  const { threshold = 1024, level = 6 } = option === true ? {} : option;
  if (!Number.isInteger(threshold) || threshold < 0) {
    throw new RangeError(
      `Cannot upgrade: compression threshold must be a whole number, got ${threshold}`,
    );
  }
  if (!Number.isInteger(level) || level < 1 || level > 9) {
    throw new RangeError(`Cannot upgrade: compression level must be 1-9, got ${level}`);
  }
  return { threshold, level };
}

/** The socket is open. */
const WS_OPEN = 1;
/** A close frame was sent; waiting for the client's. */
const WS_CLOSE_SENT = 2;
/** The closing handshake is done (or the connection failed): the TCP connection is ending. */
const WS_ENDING = 3;
/** The transport is closed. */
const WS_CLOSED = 4;

/**
 * One WebSocket connection after the switch: reads frames, assembles messages (UTF-8 checked as
 * text arrives), answers pings, runs the closing handshake and its deadline, pings an idle client,
 * and writes what the socket sends, with its backpressure.
 */
class WebSocketConnection implements SwitchedConnection, WebSocketFrameSink, WebSocketCarrier {
  readonly #transport: TransportConnection;
  readonly #socket: ServerWebSocket;
  readonly #settings: WebSocketSettings;
  readonly #log: (entry: LogEntry) => void;
  readonly #reader: WebSocketFrameReader;
  #state = WS_OPEN;
  /** The frame being read. */
  #opcode = 0;
  #fin = false;
  /** The message being assembled: its opcode (0: none), parts, size, fragments. */
  #messageOpcode = 0;
  #parts: Uint8Array[] = [];
  #messageBytes = 0;
  #fragments = 0;
  #text = "";
  #decoder: TextDecoder | null = null;
  #textDecoder: TextDecoder | null = null;
  /** The payload of the control frame being read. */
  #control: Uint8Array[] = [];
  /** The code and reason of the client's close frame, once it came. */
  #closeCode = CLOSE_ABNORMAL;
  #closeReason = "";
  #closeReceived = false;
  /** The code this side sent in its close frame, when it failed the connection. */
  #failedWith = 0;
  /** Bytes written since the transport last said it was over its high-water mark. */
  #queued = 0;
  #blocked = false;
  #now = 0;
  #lastSeen = 0;
  #pinged = false;
  #closeDeadline = 0;
  /** permessage-deflate as agreed, or null. */
  readonly #deflate: DeflateAgreement | null;
  /** The message being read is compressed (RSV1 on its first frame). */
  #compressed = false;
  /** The last bytes the client's messages inflated to: its compression context. */
  #window: Uint8Array = EMPTY;

  constructor(
    takeover: ProtocolSwitch,
    socket: ServerWebSocket,
    settings: WebSocketSettings,
    deflate: DeflateAgreement | null,
  ) {
    this.#transport = takeover.transport;
    this.#socket = socket;
    this.#settings = settings;
    this.#deflate = deflate;
    this.#log = takeover.log;
    this.#reader = new WebSocketFrameReader(
      { maxPayloadBytes: settings.maxMessageBytes, requireMask: true, allowRsv1: deflate !== null },
      this,
    );
    this.#now = this.#lastSeen = takeover.now;
    openSocket(socket, this, deflate?.header ?? "", this.#log);
    if (takeover.buffered.length > 0 && this.#state < WS_ENDING) this.onData(takeover.buffered);
  }

  //#region input

  onData(chunk: Uint8Array): void {
    if (this.#state >= WS_ENDING) return; // after a failure nothing more is read
    this.#lastSeen = this.#now;
    this.#pinged = false;
    try {
      this.#reader.push(chunk);
    } catch (error) {
      if (error instanceof WebSocketError) this.#fail(error.code, error.message);
      else this.#fail(CLOSE_PROTOCOL_ERROR, String(error));
    }
  }

  header(header: WebSocketFrameHeader): void {
    const { opcode } = header;
    this.#opcode = opcode;
    this.#fin = header.fin;
    if (opcode >= OPCODE_CLOSE) {
      this.#control = [];
      return;
    }
    if (opcode === OPCODE_CONTINUATION) {
      if (this.#messageOpcode === 0) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Continuation frame without a message");
      }
      if (header.rsv1) throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "RSV1 on a continuation");
    } else {
      if (this.#messageOpcode !== 0) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "New message inside a fragmented one");
      }
      this.#messageOpcode = opcode;
      this.#messageBytes = 0;
      this.#fragments = 0;
      this.#parts = [];
      this.#text = "";
      this.#compressed = header.rsv1;
      // Compressed text is checked once inflated; plain text as it arrives.
      // One decoder per connection: a decode without `stream` at a message's end resets it.
      this.#decoder = opcode === OPCODE_TEXT && !header.rsv1
        ? this.#textDecoder ??= new TextDecoder("utf-8", { fatal: true })
        : null;
    }
    if (++this.#fragments > this.#settings.maxFragments) {
      throw new WebSocketError(
        CLOSE_TOO_BIG,
        `Message in over ${this.#settings.maxFragments} frames`,
      );
    }
    this.#messageBytes += header.length;
    if (this.#messageBytes > this.#settings.maxMessageBytes) {
      throw new WebSocketError(
        CLOSE_TOO_BIG,
        `Message over ${this.#settings.maxMessageBytes} bytes`,
      );
    }
  }

  payload(bytes: Uint8Array): void {
    if (this.#opcode >= OPCODE_CLOSE) {
      this.#control.push(new Uint8Array(bytes)); // a copy (on Node, Buffer's slice is a view)
    } else if (this.#decoder !== null) {
      // Checked as it arrives: invalid UTF-8 fails the connection on its first bad byte.
      try {
        this.#text += this.#decoder.decode(bytes, { stream: true });
      } catch {
        throw new WebSocketError(CLOSE_INVALID_DATA, "Text message is not UTF-8");
      }
    } else {
      // A view of the chunk, which is ours: the reader unmasked it in place.
      this.#parts.push(bytes);
    }
  }

  end(): void {
    const opcode = this.#opcode;
    if (opcode >= OPCODE_CLOSE) {
      const payload = concat(this.#control, this.#control.reduce((n, c) => n + c.length, 0));
      this.#control = [];
      this.#onControl(opcode, payload);
      return;
    }
    if (!this.#fin) return;
    const messageOpcode = this.#messageOpcode;
    this.#messageOpcode = 0;
    let data: string | ArrayBuffer;
    if (this.#compressed) {
      const bytes = this.#inflate();
      if (messageOpcode === OPCODE_TEXT) {
        try {
          data = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
        } catch {
          throw new WebSocketError(CLOSE_INVALID_DATA, "Text message is not UTF-8");
        }
      } else {
        // A copy, not Buffer's slice (a view): the message is what the handler gets to keep.
        data = new Uint8Array(bytes).buffer;
      }
    } else if (messageOpcode === OPCODE_TEXT) {
      let tail: string;
      try {
        tail = (this.#decoder as TextDecoder).decode();
      } catch {
        throw new WebSocketError(CLOSE_INVALID_DATA, "Text message ends inside a character");
      }
      data = this.#text + tail;
      this.#text = "";
      this.#decoder = null;
    } else {
      const parts = this.#parts;
      this.#parts = [];
      const bytes = new Uint8Array(this.#messageBytes);
      let offset = 0;
      for (const part of parts) {
        bytes.set(part, offset);
        offset += part.length;
      }
      data = bytes.buffer;
    }
    if (this.#state === WS_OPEN) socketEvents.message(this.#socket, data);
  }

  /**
   * Inflates the compressed message in #parts (RFC 7692 §7.2.2), with the client's context in
   * front of it unless it agreed to none. The limit applies to the inflated size while inflating:
   * a small message that would inflate past maxMessageBytes is stopped there (1009).
   */
  #inflate(): Uint8Array {
    const parts = this.#parts;
    this.#parts = [];
    const window = this.#window;
    const prefix = window.length === 0 ? EMPTY : storedBlock(window);
    const input = concat(
      [prefix, ...parts, DEFLATE_TAIL],
      prefix.length + this.#messageBytes + DEFLATE_TAIL.length,
    );
    let output: Uint8Array;
    try {
      output = nodeZlib.inflateRawSync(input, {
        finishFlush: nodeZlib.constants.Z_SYNC_FLUSH,
        maxOutputLength: window.length + this.#settings.maxMessageBytes,
      });
    } catch (error) {
      if (error instanceof RangeError) {
        throw new WebSocketError(
          CLOSE_TOO_BIG,
          `Message inflates past ${this.#settings.maxMessageBytes} bytes`,
        );
      }
      throw new WebSocketError(CLOSE_INVALID_DATA, "Compressed message does not inflate");
    }
    const message = output.subarray(window.length);
    if (!(this.#deflate as DeflateAgreement).clientNoContextTakeover) {
      // A copy of the last 32 KiB: a view would keep the whole message alive.
      this.#window = new Uint8Array(output.subarray(Math.max(0, output.length - DEFLATE_WINDOW)));
    }
    return message;
  }

  /** A ping, pong or close frame, whole. */
  #onControl(opcode: number, payload: Uint8Array): void {
    if (opcode === OPCODE_PING) {
      if (this.#state === WS_OPEN) this.#write(encodeWebSocketFrame(OPCODE_PONG, payload));
      return;
    }
    if (opcode === OPCODE_PONG) return; // it answered: #lastSeen is already fresh
    // A close frame: no code, or a valid code and a UTF-8 reason (RFC 6455 §5.5.1, §7.4).
    let code = CLOSE_NO_STATUS;
    let reason = "";
    if (payload.length === 1) {
      throw new WebSocketError(CLOSE_PROTOCOL_ERROR, "Close frame of one byte");
    }
    if (payload.length >= 2) {
      code = (payload[0] << 8) | payload[1];
      if (!isValidCloseCode(code)) {
        throw new WebSocketError(CLOSE_PROTOCOL_ERROR, `Close code ${code} is not valid`);
      }
      try {
        reason = new TextDecoder("utf-8", { fatal: true }).decode(payload.subarray(2));
      } catch {
        throw new WebSocketError(CLOSE_INVALID_DATA, "Close reason is not UTF-8");
      }
    }
    this.#closeReceived = true;
    this.#closeCode = code;
    this.#closeReason = reason;
    if (this.#state === WS_OPEN) {
      // The client closes first: answer with its code (§5.5.1), then end the TCP connection,
      // which the server closes first (§7.1.1).
      socketEvents.closing(this.#socket);
      this.#write(closeFrame(code === CLOSE_NO_STATUS ? 0 : code, ""));
    }
    this.#endTransport();
  }

  onEnd(): void {
    // The client half-closed: without a close frame that is an abnormal closure.
    if (this.#state < WS_ENDING) this.#endTransport();
  }

  onDrain(): void {
    if (!this.#blocked) return;
    this.#blocked = false;
    this.#queued = 0;
    socketEvents.buffered(this.#socket, 0);
    if (this.#state === WS_OPEN) socketEvents.drain(this.#socket);
  }

  onClose(): void {
    if (this.#state === WS_CLOSED) return;
    this.#state = WS_CLOSED;
    const clean = this.#closeReceived && this.#failedWith === 0;
    const code = this.#failedWith !== 0
      ? this.#failedWith
      : this.#closeReceived
      ? this.#closeCode
      : CLOSE_ABNORMAL;
    socketEvents.closed(this.#socket, code, this.#closeReceived ? this.#closeReason : "", clean);
  }

  //#endregion
  //#region output and deadlines

  /** Writes a frame, keeping count of what is queued past the transport's high-water mark. */
  #write(frame: Uint8Array): boolean {
    if (this.#state >= WS_ENDING) return false;
    const fits = this.#transport.write(frame);
    if (!fits || this.#blocked) {
      this.#blocked = true;
      this.#queued += frame.length;
      socketEvents.buffered(this.#socket, this.#queued);
      if (this.#queued > this.#settings.maxBufferedBytes) {
        this.#log({ level: "warn", message: "wireserve: WebSocket client too slow, dropped" });
        this.terminate();
      }
      return false;
    }
    return true;
  }

  send(opcode: number, payload: Uint8Array): boolean {
    if (this.#state !== WS_OPEN) return false;
    const compression = this.#settings.compression;
    if (this.#deflate !== null && compression !== null && payload.length >= compression.threshold) {
      // Each message on its own (server_no_context_takeover), ended with a sync flush whose
      // empty block the receiver adds back.
      const deflated = nodeZlib.deflateRawSync(payload, {
        level: compression.level,
        windowBits: this.#deflate.serverWindowBits,
        finishFlush: nodeZlib.constants.Z_SYNC_FLUSH,
      });
      const body = deflated.length >= 4 ? deflated.subarray(0, deflated.length - 4) : deflated;
      return this.#write(
        encodeWebSocketFrame(opcode, body.length === 0 ? new Uint8Array(1) : body, true, true),
      );
    }
    return this.#write(encodeWebSocketFrame(opcode, payload));
  }

  ping(payload: Uint8Array): void {
    if (this.#state === WS_OPEN) this.#write(encodeWebSocketFrame(OPCODE_PING, payload));
  }

  /** The socket's close(): sends the close frame and waits for the client's. */
  close(code = CLOSE_GOING_AWAY, reason = "going away"): void {
    if (this.#state !== WS_OPEN) return;
    socketEvents.closing(this.#socket);
    this.#write(closeFrame(code === CLOSE_NO_STATUS ? 0 : code, reason));
    this.#state = WS_CLOSE_SENT;
    this.#closeDeadline = deadlineAfter(this.#now, this.#settings.closeTimeout);
  }

  terminate(): void {
    if (this.#state === WS_CLOSED) return;
    this.#state = WS_ENDING;
    this.#transport.destroy();
  }

  checkTimers(now: number): void {
    this.#now = now;
    if (this.#state === WS_CLOSED) return;
    if (this.#closeDeadline !== 0 && now >= this.#closeDeadline) {
      this.#closeDeadline = 0;
      this.terminate(); // the client never answered the close frame, or never read it
      return;
    }
    const idle = this.#settings.idleTimeout;
    if (this.#state !== WS_OPEN || idle === Infinity) return;
    if (now - this.#lastSeen >= idle) {
      if (!this.#pinged) {
        this.#pinged = true;
        this.#lastSeen = now;
        this.#write(encodeWebSocketFrame(OPCODE_PING, EMPTY));
      } else {
        this.terminate(); // no byte, not even a pong, for twice the idle time
      }
    }
  }

  /** Fails the connection (RFC 6455 §7.1.7): a close frame with `code`, then the TCP close. */
  #fail(code: number, message: string): void {
    if (this.#state >= WS_ENDING) return;
    this.#log({ level: "warn", message: `wireserve: WebSocket closed with ${code}: ${message}` });
    socketEvents.error(this.#socket);
    if (this.#state === WS_OPEN) this.#write(closeFrame(code, ""));
    this.#failedWith = code;
    this.#endTransport();
  }

  /** → WS_ENDING: the close frames are done (or the connection failed); the server closes TCP. */
  #endTransport(): void {
    if (this.#state >= WS_ENDING) return;
    this.#state = WS_ENDING;
    socketEvents.closing(this.#socket);
    this.#closeDeadline = deadlineAfter(this.#now, this.#settings.closeTimeout);
    this.#transport.end(false);
  }

  //#endregion
}

/** A close frame with `code` (0: none) and `reason`. */
function closeFrame(code: number, reason: string): Uint8Array {
  if (code === 0) return encodeWebSocketFrame(OPCODE_CLOSE, EMPTY);
  const text = encodeUtf8(reason);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return encodeWebSocketFrame(OPCODE_CLOSE, payload);
}

//#endregion
//#region Transport adapters

/** How long Deno's accept loop waits after a failed accept (out of file descriptors, say). */
const ACCEPT_RETRY_MILLISECONDS = 50;
/** Size of the buffer Deno reads into. */
const READ_BUFFER_BYTES = 64 * 1024;
/**
 * The buffer a Deno connection starts reading with. A request head fits; an idle keep-alive
 * connection then holds 8 KiB, not 64. A read that fills it switches to the large one.
 */
const FIRST_READ_BUFFER_BYTES = 2 * 1024;

// The few runtime APIs used, declared structurally: no @types packages, and each runtime's own
// declarations stay compatible with these.

type DenoAddr =
  | { transport: "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string | null };
interface DenoConn {
  readonly remoteAddr: DenoAddr;
  readonly localAddr: DenoAddr;
  read(buffer: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
}
interface DenoListener {
  readonly addr: DenoAddr;
  accept(): Promise<DenoConn>;
  close(): void;
}
interface DenoNamespace {
  listen(
    options: { hostname: string; port: number; transport: "tcp"; reusePort?: boolean } | {
      path: string;
      transport: "unix";
    },
  ): DenoListener;
  /** Present only with `--unstable-net`, as `Deno.listen`'s `reusePort` is usable only then. */
  listenDatagram?: unknown;
  listenTls(options: {
    hostname: string;
    port: number;
    cert: string;
    key: string;
    alpnProtocols: string[];
  }): DenoListener;
}

interface BunSocket {
  data: BunConnection;
  readonly remoteAddress: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort: number;
  write(bytes: Uint8Array): number;
  shutdown(): void;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  setNoDelay?(noDelay?: boolean): void;
}
interface BunListener {
  readonly hostname?: string;
  readonly port?: number;
  stop(closeActive?: boolean): void;
}
interface BunNamespace {
  listen(options: {
    hostname?: string;
    port?: number;
    unix?: string;
    reusePort?: boolean;
    allowHalfOpen: boolean;
    tls?: { cert: string; key: string; ALPNProtocols: string };
    socket: {
      open(socket: BunSocket): void;
      data(socket: BunSocket, chunk: Uint8Array): void;
      drain(socket: BunSocket): void;
      end(socket: BunSocket): void;
      close(socket: BunSocket): void;
      error(socket: BunSocket, error: Error): void;
      handshake(socket: BunSocket, success: boolean, error: Error | null): void;
    };
  }): BunListener;
}

/** The runtime globals, typed as far as this file uses them. */
const RUNTIME = globalThis as unknown as { Deno?: DenoNamespace; Bun?: BunNamespace };

/**
 * Whether `Deno.listen` may be asked for `reusePort`. Without `--unstable-net` Deno does not
 * throw but ends the process (exit code 70), so this is checked first: the unstable network APIs
 * exist on `Deno` only with that flag.
 */
const DENO_REUSE_PORT = typeof RUNTIME.Deno?.listenDatagram === "function";

/**
 * Whether this Node's `node:net` honours `reusePort` (added in 22.12 and 23.1; older versions
 * ignore it, and the second listener fails with EADDRINUSE). Deno's and Bun's `node:net` do.
 */
const NODE_REUSE_PORT = (() => {
  if (RUNTIME_PROFILE.name !== "node") return true;
  const [major, minor] = nodeProcess.versions.node.split(".").map(Number);
  return major > 23 || major === 23 && minor >= 1 || major === 22 && minor >= 12;
})();

/** Deno: a pull loop over `conn.read`, and a write loop that finishes Deno's partial writes. */
const listenDeno: Transport = (options, accept) => {
  const deno = RUNTIME.Deno;
  if (deno === undefined) {
    throw new TypeError("Cannot listen with the deno transport: Deno is not available");
  }
  const { hostname, port, tls, path } = options;
  if (tls !== undefined && path !== undefined) {
    throw new TypeError("Cannot listen with the deno transport: Deno has no TLS on Unix sockets");
  }
  if (options.reusePort && (tls !== undefined || !DENO_REUSE_PORT)) {
    throw new TypeError(
      "Cannot listen with reusePort on the deno transport: it needs `deno run --unstable-net` " +
        "(and plain TCP); the node transport has it without the flag",
    );
  }
  const listener = path !== undefined
    ? deno.listen({ path, transport: "unix" })
    : tls === undefined
    ? deno.listen({
      hostname,
      port,
      transport: "tcp",
      ...(options.reusePort && { reusePort: true }),
    })
    : deno.listenTls({ hostname, port, ...tls, alpnProtocols: ["http/1.1"] });
  const secure = tls !== undefined;
  let closed = false;
  (async () => {
    while (!closed) {
      let conn: DenoConn;
      try {
        conn = await listener.accept();
      } catch {
        if (closed) return;
        // Out of file descriptors (EMFILE) and the like: the listener is still good, so wait a
        // little and accept again, as libuv does for Node, instead of serving nobody ever after.
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MILLISECONDS));
        continue;
      }
      const connection = new DenoConnection(conn, secure);
      connection.start(accept(connection));
    }
  })();
  return {
    addr: fromDenoAddr(listener.addr),
    close: () => {
      closed = true;
      try {
        listener.close();
      } catch { /* already closed */ }
    },
  };
};

/** The address of a Unix socket's client end: unnamed, as clients' ends almost always are. */
const UNIX_CLIENT_ADDR: UnixAddr = { transport: "unix", path: "" };

/** Deno's address as wireserve's: IPv4-mapped IPv6 unmapped; a client's unnamed Unix end is `""`. */
function fromDenoAddr(addr: DenoAddr): Addr {
  return addr.transport === "unix"
    ? { transport: "unix", path: addr.path ?? "" }
    : toNetAddr(addr.hostname, addr.port);
}

class DenoConnection implements TransportConnection {
  readonly secure: boolean;
  #conn: DenoConn;
  #events: ConnectionEvents = IGNORED_EVENTS;
  /** Bytes waiting for the write in flight to finish. */
  #queue: Uint8Array[] = [];
  /** Bytes not yet written: the write in flight's and the queue's. */
  #queuedBytes = 0;
  /** Whether a write is in flight: its bytes are `#sending`. */
  #writing = false;
  #sending: Uint8Array = EMPTY;
  /** `write` returned false: the driver waits for `onDrain`. */
  #drainWanted = false;
  #ending = false;
  #lingering = true;
  #closed = false;
  #paused = false;
  #wake: (() => void) | null = null;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #peerEnded = false;
  #remoteAddr: Addr | undefined;
  #localAddr: Addr | undefined;

  constructor(conn: DenoConn, secure: boolean) {
    this.#conn = conn;
    this.secure = secure;
    try {
      conn.setNoDelay?.(true);
    } catch { /* not a TCP socket */ }
  }

  // Converted when first asked for (most handlers never do), then kept.
  get remoteAddr(): Addr {
    return this.#remoteAddr ??= fromDenoAddr(this.#conn.remoteAddr);
  }

  get localAddr(): Addr {
    return this.#localAddr ??= fromDenoAddr(this.#conn.localAddr);
  }

  start(events: ConnectionEvents): void {
    this.#events = events;
    this.#readLoop();
  }

  async #readLoop(): Promise<void> {
    let buffer = new Uint8Array(FIRST_READ_BUFFER_BYTES);
    while (!this.#closed) {
      if (this.#paused && !this.#ending) await new Promise<void>((resolve) => this.#wake = resolve);
      if (this.#closed) return;
      let count: number | null;
      try {
        count = await this.#conn.read(buffer);
      } catch {
        count = null;
      }
      if (this.#closed) return;
      if (count === null) {
        this.#peerEnded = true;
        if (this.#ending) this.#close();
        else this.#events.onEnd();
        return;
      }
      // A copy of what arrived: the driver may keep views of it while this buffer is read into again.
      const chunk = allocBytes(count);
      chunk.set(count === buffer.length ? buffer : buffer.subarray(0, count));
      this.#events.onData(chunk);
      if (count === buffer.length && buffer.length < READ_BUFFER_BYTES) {
        buffer = new Uint8Array(READ_BUFFER_BYTES); // a body or a burst: read in larger pieces
      }
    }
  }

  write(bytes: Uint8Array): boolean {
    if (this.#closed || this.#ending) return false;
    this.#queuedBytes += bytes.length;
    if (this.#writing) this.#queue.push(bytes);
    else this.#send(bytes);
    if (this.#queuedBytes < WRITE_HIGH_WATER) return true;
    this.#drainWanted = true;
    return false;
  }

  // One write in flight at a time, continued from its promise by a callback made once per
  // connection: an async function per write cost a frame and a promise per response.
  #send(bytes: Uint8Array): void {
    this.#writing = true;
    this.#sending = bytes;
    this.#conn.write(bytes).then(this.#wrote, this.#writeFailed);
  }

  readonly #wrote = (count: number): void => {
    const sent = this.#sending;
    this.#queuedBytes -= count;
    if (this.#closed) return;
    const queue = this.#queue;
    if (count < sent.length) this.#send(sent.subarray(count));
    else if (queue.length > 0) {
      // Everything written meanwhile goes out in one write.
      const bytes = queue.length === 1 ? queue[0] : concat(queue, this.#queuedBytes);
      queue.length = 0;
      this.#send(bytes);
    } else {
      this.#writing = false;
      this.#sending = EMPTY;
    }
    if (this.#drainWanted && this.#queuedBytes < WRITE_HIGH_WATER) {
      this.#drainWanted = false;
      this.#events.onDrain();
    }
    if (!this.#writing && this.#ending && !this.#closed) this.#halfClose();
  };

  readonly #writeFailed = (): void => {
    this.#writing = false;
    this.#sending = EMPTY;
    this.#close();
  };

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  end(linger = true): void {
    if (this.#ending || this.#closed) return;
    this.#ending = true;
    this.#lingering = linger;
    this.resume();
    if (!this.#writing) this.#halfClose();
  }

  #halfClose(): void {
    // Linger only while the peer may still send: not once it has ended, nor when the server
    // expects nothing more from it.
    if (this.#peerEnded || !this.#lingering) {
      this.#close();
      return;
    }
    this.#linger = setTimeout(() => this.#close(), LINGER_MILLISECONDS);
    this.#conn.closeWrite().catch(() => this.#close());
  }

  destroy(): void {
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#linger);
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.resume();
    // Never from inside the driver's call (end, destroy): see the transport contract.
    queueMicrotask(() => this.#events.onClose());
  }
}

/** Bun: its socket handlers push events; its writes are unbuffered, so the rest is queued here. */
const listenBun: Transport = (options, accept) => {
  const bun = RUNTIME.Bun;
  if (bun === undefined) {
    throw new TypeError("Cannot listen with the bun transport: Bun is not available");
  }
  // Bun's listener reports the name it was given as its address ("localhost"), where Deno and
  // node:net report the address bound: resolve a name first, as node:net does.
  const { path } = options;
  if (path === undefined && nodeNet.isIP(options.hostname) === 0) {
    return nodeDns.lookup(options.hostname).then(({ address }) =>
      listenBun({ ...options, hostname: address }, accept)
    );
  }
  const listener = bun.listen({
    ...(path === undefined
      ? { hostname: options.hostname, port: options.port, reusePort: options.reusePort === true }
      : { unix: path }),
    // Half-open: a client may send its request and FIN, and still deserves the response.
    allowHalfOpen: true,
    // ALPN protocol lists are length-prefixed strings on the wire; Bun takes them in that form.
    tls: options.tls && { ...options.tls, ALPNProtocols: "\x08http/1.1" },
    socket: {
      open(socket) {
        const connection = new BunConnection(socket, options.tls !== undefined, path ?? null);
        socket.data = connection;
        connection.events = accept(connection);
      },
      data: (socket, chunk) => socket.data.onData(chunk),
      drain: (socket) => socket.data.onWritable(),
      end: (socket) => socket.data.onPeerEnd(),
      close: (socket) => socket.data.onClosed(),
      error() {/* close follows */},
      // With a handshake handler, Bun opens a TLS socket at accept, not after the handshake: the
      // connection then counts toward the limits and its idle timer covers a stalled handshake.
      handshake() {},
    },
  });
  return {
    addr: path === undefined
      ? toNetAddr(listener.hostname ?? "", listener.port ?? 0)
      : { transport: "unix", path },
    close: () => listener.stop(false),
  };
};

/** The scratch array of BunConnection.writeMany, shared (writes never overlap on one thread). */
let bunScratch = new Uint8Array(0);

class BunConnection implements TransportConnection {
  readonly secure: boolean;
  events: ConnectionEvents = IGNORED_EVENTS;
  #socket: BunSocket;
  /** Bytes the socket did not take yet; null when none (an idle connection holds no array). */
  #queue: Uint8Array[] | null = null;
  #queuedBytes = 0;
  #ending = false;
  #lingering = true;
  #closed = false;
  #peerEnded = false;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #remoteAddr: Addr | undefined;
  #localAddr: Addr | undefined;

  constructor(socket: BunSocket, secure: boolean, unixPath: string | null) {
    this.#socket = socket;
    this.secure = secure;
    if (unixPath !== null) {
      this.#remoteAddr = UNIX_CLIENT_ADDR;
      this.#localAddr = { transport: "unix", path: unixPath };
    }
    try {
      socket.setNoDelay?.(true);
    } catch { /* not supported */ }
  }

  // Read when first asked for (most handlers never do), then kept: an idle connection holds less.
  get remoteAddr(): Addr {
    const socket = this.#socket;
    return this.#remoteAddr ??= toNetAddr(socket.remoteAddress ?? "", socket.remotePort ?? 0);
  }

  get localAddr(): Addr {
    const socket = this.#socket;
    return this.#localAddr ??= toNetAddr(socket.localAddress ?? "", socket.localPort ?? 0);
  }

  onData(chunk: Uint8Array): void {
    this.events.onData(chunk);
  }

  onPeerEnd(): void {
    this.#peerEnded = true;
    if (this.#ending) this.#socket.end();
    else this.events.onEnd();
  }

  onClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#linger);
    // Bun may report the close from inside terminate(): never re-enter the driver's call.
    queueMicrotask(() => this.events.onClose());
  }

  /** Bun says the socket may take more bytes: send what is queued. */
  onWritable(): void {
    const queue = this.#queue;
    if (queue !== null) {
      while (queue.length > 0) {
        const bytes = queue[0];
        const written = this.#socket.write(bytes);
        if (written < 0) return;
        this.#queuedBytes -= written;
        if (written < bytes.length) {
          queue[0] = bytes.subarray(written);
          return;
        }
        queue.shift();
      }
      this.#queue = null;
    }
    if (this.#ending) this.#halfClose();
    else this.events.onDrain();
  }

  write(bytes: Uint8Array): boolean {
    if (this.#closed || this.#ending) return false;
    if (this.#queue === null) {
      const written = this.#socket.write(bytes);
      if (written === bytes.length) return true;
      if (written < 0) return false;
      bytes = bytes.subarray(written);
    }
    (this.#queue ??= []).push(bytes);
    this.#queuedBytes += bytes.length;
    return this.#queuedBytes < WRITE_HIGH_WATER;
  }

  // Bun has no writev: the pieces are copied into one scratch array for one send. Bun's write
  // sends or refuses at once and keeps no reference, so the array serves the next write too;
  // only what the socket did not take is copied out to wait. A new array per response (head and
  // body) cost more than the copy: JSC zero-fills it.
  writeMany(pieces: readonly Uint8Array[]): boolean {
    if (this.#closed || this.#ending) return false;
    let length = 0;
    for (const piece of pieces) length += piece.length;
    if (this.#queue !== null || length > MAX_COALESCED_BYTES) {
      // Behind bytes already waiting, or too large to copy: one by one, as write would.
      let writable = true;
      for (const piece of pieces) writable = this.write(piece);
      return writable;
    }
    if (bunScratch.length < length) bunScratch = new Uint8Array(MAX_COALESCED_BYTES);
    let offset = 0;
    for (const piece of pieces) {
      bunScratch.set(piece, offset);
      offset += piece.length;
    }
    const written = this.#socket.write(bunScratch.subarray(0, length));
    if (written === length) return true;
    if (written < 0) return false;
    const rest = bunScratch.slice(written, length);
    this.#queue = [rest];
    this.#queuedBytes = rest.length;
    return this.#queuedBytes < WRITE_HIGH_WATER;
  }

  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  end(linger = true): void {
    if (this.#ending || this.#closed) return;
    this.#ending = true;
    this.#lingering = linger;
    this.#socket.resume();
    if (this.#queue === null) this.#halfClose();
  }

  #halfClose(): void {
    if (this.#peerEnded || !this.#lingering) {
      this.#socket.end(); // nothing (more) expected from the peer: close outright
      return;
    }
    // shutdown() sends FIN and keeps reading; Bun's end() would close at once and could reset.
    this.#socket.shutdown();
    this.#linger = setTimeout(() => this.#socket.end(), LINGER_MILLISECONDS);
  }

  destroy(): void {
    if (this.#closed) return;
    this.#socket.terminate();
  }
}

/** Node (and any runtime's `node:net`): streams with `write() === false` and `'drain'`. */
const listenNode: Transport = (options, accept) => {
  const { tls, path } = options;
  // TLS started by the server (after a PROXY protocol header) rather than at accept.
  const deferred: DeferredTls | null = tls !== undefined && options.deferTls === true
    ? {
      context: nodeTls.createSecureContext(tls),
      handshakeTimeout: options.handshakeTimeout,
      unixPath: path ?? null,
    }
    : null;
  if (options.reusePort && !NODE_REUSE_PORT) {
    throw new TypeError(
      `Cannot listen with reusePort: Node ${nodeProcess.versions.node} ignores it (22.12 or 23.1 and later have it)`,
    );
  }
  const onConnection = (socket: nodeNet.Socket) => {
    const connection = new NodeConnection(
      socket,
      tls !== undefined && deferred === null,
      path ?? null,
    );
    connection.deferredTls = deferred;
    connection.start(accept(connection));
  };
  // For TLS, the connection listener fires after the handshake ("secureConnection").
  const server = tls === undefined || deferred !== null
    ? nodeNet.createServer({ allowHalfOpen: true, noDelay: true }, onConnection)
    : nodeTls.createServer({
      ...tls,
      allowHalfOpen: true,
      noDelay: true,
      ALPNProtocols: ["http/1.1"],
      handshakeTimeout: options.handshakeTimeout,
    }, onConnection);
  // A failed or timed-out handshake only emits this; the socket would otherwise stay open.
  server.on("tlsClientError", (_error: Error, socket: nodeNet.Socket) => socket.destroy());
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const where = path === undefined
      ? { host: options.hostname, port: options.port, reusePort: options.reusePort === true }
      : { path };
    server.listen(where, () => {
      server.off("error", reject);
      const address = server.address() as nodeNet.AddressInfo;
      resolve({
        addr: path === undefined
          ? toNetAddr(address.address, address.port)
          : { transport: "unix", path },
        close: () => server.close(),
      });
    });
  });
};

/** What a NodeConnection needs to start TLS itself: see `ListenOptions.deferTls`. */
interface DeferredTls {
  readonly context: nodeTls.SecureContext;
  readonly handshakeTimeout: number | undefined;
  readonly unixPath: string | null;
}

class NodeConnection implements TransportConnection {
  readonly secure: boolean;
  deferredTls: DeferredTls | null = null;
  #socket: nodeNet.Socket;
  #ending = false;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #remoteAddr: Addr | undefined;
  #localAddr: Addr | undefined;

  constructor(socket: nodeNet.Socket, secure: boolean, unixPath: string | null) {
    this.#socket = socket;
    this.secure = secure;
    if (unixPath !== null) {
      this.#remoteAddr = UNIX_CLIENT_ADDR;
      this.#localAddr = { transport: "unix", path: unixPath };
    }
  }

  // Each address is a system call (getpeername, getsockname): made only when someone asks.
  get remoteAddr(): Addr {
    const socket = this.#socket;
    return this.#remoteAddr ??= toNetAddr(socket.remoteAddress ?? "", socket.remotePort ?? 0);
  }

  get localAddr(): Addr {
    const socket = this.#socket;
    return this.#localAddr ??= toNetAddr(socket.localAddress ?? "", socket.localPort ?? 0);
  }

  start(events: ConnectionEvents): void {
    const socket = this.#socket;
    socket.on("data", (chunk: Uint8Array) => events.onData(chunk));
    socket.on("end", () => {
      if (this.#ending) socket.destroy();
      else events.onEnd();
    });
    socket.on("drain", () => events.onDrain());
    socket.on("error", () => {/* close follows */});
    socket.on("close", () => {
      clearTimeout(this.#linger);
      events.onClose();
    });
  }

  write(bytes: Uint8Array): boolean {
    if (this.#ending || this.#socket.destroyed) return false;
    return this.#socket.write(bytes);
  }

  // Corked writes go out in one writev: a head and a large body, uncopied.
  writeMany(pieces: readonly Uint8Array[]): boolean {
    if (this.#ending || this.#socket.destroyed) return false;
    const socket = this.#socket;
    socket.cork();
    let writable = true;
    for (const piece of pieces) writable = socket.write(piece);
    socket.uncork();
    return writable;
  }

  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  end(linger = true): void {
    if (this.#ending) return;
    this.#ending = true;
    const socket = this.#socket;
    socket.resume(); // input is dropped from now on: never leave it to the kernel
    if (!linger) {
      socket.end(() => socket.destroy());
      return;
    }
    // Linger once everything is flushed (the driver's writeTimeout bounds the flush itself).
    socket.end(() => {
      this.#linger = setTimeout(() => socket.destroy(), LINGER_MILLISECONDS);
    });
  }

  destroy(): void {
    this.#socket.destroy();
  }

  startTls(leftover: Uint8Array, accept: (secure: TransportConnection) => ConnectionEvents): void {
    const deferred = this.deferredTls;
    const socket = this.#socket;
    if (deferred === null) {
      socket.destroy();
      return;
    }
    // This connection's events end here; the handshake reads on from the bytes given back.
    socket.removeAllListeners("data");
    socket.removeAllListeners("end");
    socket.removeAllListeners("drain");
    socket.pause();
    if (leftover.length > 0) socket.unshift(leftover);
    const secure = new nodeTls.TLSSocket(socket, {
      isServer: true,
      secureContext: deferred.context,
      ALPNProtocols: ["http/1.1"],
    });
    const timer = deferred.handshakeTimeout === undefined
      ? undefined
      : setTimeout(() => secure.destroy(), deferred.handshakeTimeout);
    secure.on("error", () => secure.destroy());
    secure.once("close", () => clearTimeout(timer));
    secure.once("secure", () => {
      clearTimeout(timer);
      const connection = new NodeConnection(secure, true, deferred.unixPath);
      connection.start(accept(connection));
    });
  }
}

/**
 * The built-in transport adapters by name: `serve`'s `transport` option picks one, and a
 * transport of your own can wrap one (to count or meter connections, to inject faults in a test),
 * keeping its mechanics and the contract above. `deno` and `bun` work only on their runtime;
 * `node` (`node:net` and `node:tls`) on all three.
 *
 * @example Counting accepted connections
 * ```ts
 * import { serve, type Transport, transports } from "jsr:@wireserve/wireserve";
 * let accepted = 0;
 * const counting: Transport = (options, accept) =>
 *   transports.node(options, (connection) => {
 *     accepted++;
 *     return accept(connection);
 *   });
 * serve({ port: 8080, transport: counting }, () => new Response(`${accepted} connections`));
 * ```
 */
export const transports: Readonly<Record<TransportName, Transport>> = Object.freeze({
  deno: listenDeno,
  bun: listenBun,
  node: listenNode,
});

//#endregion
//#region serve()

/** The PROXY protocol on a listener: which peers may send the header, and its limits. */
export interface ProxyProtocolOptions {
  /**
   * The load balancers allowed to connect: addresses and CIDR blocks, IPv4 or IPv6
   * (`"10.0.0.0/8"`, `"192.0.2.1"`, `"fd00::/8"`). A connection from any other peer is closed at
   * once, unread: a client that can reach the port directly could otherwise claim any address.
   * On a Unix socket, `"unix"` trusts every peer: the socket file's permissions decide who can
   * connect.
   */
  trusted: readonly string[];
  /**
   * Milliseconds the header may take to arrive once the connection is open. A balancer writes it
   * at once, with the connection; this only bounds a peer that never does.
   * @default {5000}
   */
  timeout?: number;
  /**
   * The largest version 2 header accepted, TLVs included (a version 1 line is at most 107 bytes).
   * @default {4096}
   */
  maxHeaderBytes?: number;
}

/**
 * Hands on a connection whose PROXY protocol header has been read, with the bytes that followed
 * it; returns the events for what the connection delivers from then on.
 */
type PassProxied = (
  transport: TransportConnection,
  header: ProxyProtocolHeader,
  rest: Uint8Array,
) => ConnectionEvents;

/**
 * Reads the PROXY protocol header off a new connection before anything else sees a byte of it,
 * then passes the connection on with the client's addresses. The protocol's safety rules: the
 * header is required, never guessed at; only trusted peers may send it (checked by the caller
 * before the gate exists); a malformed, oversized, late or cut-short header closes the connection
 * without an answer, because nothing that follows it can be trusted to be HTTP.
 */
class ProxyProtocolGate implements ConnectionEvents {
  #transport: TransportConnection;
  #maxBytes: number;
  #received: Uint8Array = EMPTY;
  #events: ConnectionEvents | null = null;
  #pass: PassProxied;
  #onDone: (gate: ProxyProtocolGate) => void;
  readonly deadline: number;

  constructor(
    transport: TransportConnection,
    maxBytes: number,
    deadline: number,
    pass: PassProxied,
    onDone: (gate: ProxyProtocolGate) => void,
  ) {
    this.#transport = transport;
    this.#maxBytes = maxBytes;
    this.deadline = deadline;
    this.#pass = pass;
    this.#onDone = onDone;
  }

  onData(chunk: Uint8Array): void {
    if (this.#events !== null) return this.#events.onData(chunk);
    // Bounded: the parser throws once more than a header's worth has arrived without one.
    const received = this.#received.length === 0
      ? chunk
      : concat([this.#received, chunk], this.#received.length + chunk.length);
    let header: ProxyProtocolHeader | null;
    try {
      header = parseProxyHeader(received, this.#maxBytes);
    } catch {
      return this.drop();
    }
    if (header === null) {
      this.#received = received;
      return;
    }
    this.#received = EMPTY;
    this.#onDone(this);
    this.#events = this.#pass(this.#transport, header, received.subarray(header.size));
  }

  onEnd(): void {
    if (this.#events !== null) this.#events.onEnd();
    else this.drop(); // the header was cut short
  }

  onDrain(): void {
    this.#events?.onDrain();
  }

  onClose(): void {
    if (this.#events !== null) this.#events.onClose();
    else this.#onDone(this);
  }

  /** Closes a connection whose header has not (all) arrived. */
  drop(): void {
    if (this.#events === null) this.#transport.destroy();
  }
}

/**
 * A connection whose PROXY protocol header has been read: the client's addresses from the header
 * (the peer's own where it gave none), and everything else from the connection itself.
 */
class ProxiedConnection implements TransportConnection {
  readonly remoteAddr: Addr;
  readonly localAddr: Addr;
  readonly secure: boolean;
  readonly proxy: ProxyInfo;
  /** The wrapped transport's, when it has one. */
  readonly writeMany?: (pieces: readonly Uint8Array[]) => boolean;
  #transport: TransportConnection;

  constructor(transport: TransportConnection, header: ProxyProtocolHeader) {
    this.#transport = transport;
    if (transport.writeMany !== undefined) {
      this.writeMany = (pieces) => transport.writeMany!(pieces);
    }
    this.remoteAddr = header.source ?? transport.remoteAddr;
    this.localAddr = header.destination ?? transport.localAddr;
    this.secure = transport.secure;
    this.proxy = { peer: transport.remoteAddr, header };
  }

  write(bytes: Uint8Array): boolean {
    return this.#transport.write(bytes);
  }

  pause(): void {
    this.#transport.pause();
  }

  resume(): void {
    this.#transport.resume();
  }

  end(linger?: boolean): void {
    this.#transport.end(linger);
  }

  destroy(): void {
    this.#transport.destroy();
  }
}

/** Options for {@linkcode serve}. The limits of {@linkcode Limits} are options too. */
export interface ServeOptions extends Partial<Limits>, Partial<Timeouts> {
  /**
   * The port to listen on; 0 picks a free one.
   * @default {8080}
   */
  port?: number;
  /**
   * The address to listen on.
   * @default {"0.0.0.0"}
   */
  hostname?: string;
  /** Only in {@linkcode UnixServeOptions}: a Unix socket instead of a port. */
  path?: undefined;
  /**
   * Let several listeners (processes or threads) bind the same port, and the kernel spread new
   * connections across them (SO_REUSEPORT, Linux). {@linkcode startWorkers} does this for you:
   * in its workers this defaults to true. Deno needs `--unstable-net` for it; `serve` throws a
   * TypeError saying so rather than bind one listener alone.
   * @default {false}
   */
  reusePort?: boolean;
  /** Aborting it shuts the server down, as {@linkcode Server.shutdown} does. */
  signal?: AbortSignal;
  /** Called once the server listens, with the bound address. */
  onListen?: (addr: NetAddr) => void;
  /**
   * Turns an exception thrown by the handler (or a value that is not a `Response`) into a
   * response. The default logs the error and answers a plain 500, with no details.
   */
  onError?: (error: unknown, request: Request) => Response | Promise<Response>;
  /**
   * The transport adapter: a built-in one by name, or your own. Defaults to the runtime's own
   * (`Bun.listen`, `Deno.listen`, or `node:net`); `"node"` works on all three runtimes. HTTPS on
   * Deno defaults to `"node"` (`node:tls`): `Deno.listenTls` cannot drop a connection whose TLS
   * handshake stalls, so with `"deno"` such a client holds its connection until it gives up.
   */
  transport?: TransportName | Transport;
  /**
   * Requests served on one connection before it is closed.
   * @default {1000}
   */
  maxRequestsPerConnection?: number;
  /**
   * Open connections. Past it, a new connection is answered 503 and closed at once.
   * @default {10000}
   */
  maxConnections?: number;
  /**
   * Give each request a `signal` that aborts when the client disconnects before its response is
   * complete, as `Deno.serve` does, so a handler can stop work nobody will receive. Off by
   * default because it costs: an `AbortController` and a `Request` init per request, a few
   * microseconds each on Node and Deno.
   * @default {false}
   */
  abortOnDisconnect?: boolean;
  /**
   * Open connections from one client address. Past it, a new connection from that address is
   * answered 503 and closed. Off by default: many clients can share one address behind NAT.
   * @default {Infinity}
   */
  maxConnectionsPerClient?: number;
  /**
   * After `shutdown()`, how long requests in progress may take to finish before their
   * connections are dropped.
   * @default {10000}
   */
  shutdownTimeout?: number;
  /**
   * The certificate chain in PEM, to serve HTTPS (with `key`). ALPN advertises `http/1.1`.
   */
  cert?: string;
  /** The private key in PEM, to serve HTTPS (with `cert`). */
  key?: string;
  /**
   * Receives what the server logs: a handler that failed or timed out, a response body that
   * failed mid-stream. The default writes it with `console.error`.
   */
  onLog?: (entry: LogEntry) => void;
  /**
   * The time source of the timeouts. The default is the system's (`Date.now`, `setInterval`); a
   * test can pass a manual clock and move time by hand, with no real waiting.
   */
  clock?: Clock;
  /**
   * An access log: one line per request, written after its response, in batches (never a write
   * per request). `true` writes the Combined Log Format to standard output; a format name
   * (`"common"`, `"combined"`, `"json"`) writes that format there; an object chooses the format,
   * where the text goes (`write`) and which proxies to believe about the client's address.
   * Requests the server answered itself (400, 408, 413, 414, 431, 501, 505…) are logged too, their
   * request line escaped; a request cut short says why in the JSON format's `reason`. Off by
   * default.
   * @default {false}
   */
  accessLog?: boolean | AccessLogFormat | AccessLogOptions;
  /**
   * Expect a PROXY protocol header (version 1 or 2, HAProxy's) at the start of every connection,
   * from the load balancers `trusted` names, and take the client's address from it:
   * `info.remoteAddr` is then the client, `info.proxy` has the header (TLVs included) and the
   * balancer's address. The header is required: a connection without a valid one, or from a peer
   * not trusted, is closed without an answer. It comes before the TLS handshake when `cert` is
   * set. `maxConnectionsPerClient`, `rateLimit` and the access log see the client from the header;
   * `trustProxy` (for `X-Forwarded-For`) then applies to that address. Off by default.
   */
  proxyProtocol?: ProxyProtocolOptions;
}

/**
 * Options for {@linkcode serve} on a Unix domain socket (`serve({ path })`, as `Deno.serve`
 * takes it): a reverse proxy on the same machine (nginx's `proxy_pass http://unix:/run/app.sock`)
 * reaches the server without a TCP port. Handlers get `ConnInfo<Addr>`: the addresses are
 * `UnixAddr`, or the client's `NetAddr` from a PROXY protocol header.
 *
 * A socket file left by a server that crashed is replaced: when the path exists, `serve` connects
 * to it first, and only if nobody answers (the file is stale) removes it and listens. A live
 * server there, or a file that is not a socket, makes `ready` reject with `EADDRINUSE`. The file
 * is removed when the server shuts down.
 */
export interface UnixServeOptions
  extends Omit<ServeOptions, "port" | "hostname" | "path" | "onListen"> {
  /** The socket file's path. */
  path: string;
  /**
   * The socket file's permissions, set as soon as it exists: a client needs write permission to
   * connect, so `0o660` lets the file's group (nginx's user, say) in, `0o666` everyone. Without
   * it the file has what the process's umask leaves.
   */
  mode?: number;
  /** Called once the server listens, with the socket's address. */
  onListen?: (addr: UnixAddr) => void;
}

/**
 * A running server, returned by {@linkcode serve}.
 *
 * @typeParam A The type of its address: `NetAddr`, or `UnixAddr` on a Unix socket.
 */
export interface Server<A extends Addr = NetAddr> {
  /**
   * The bound address, numeric (`hostname: "localhost"` gives `127.0.0.1`, or `::1` where the
   * name resolves to that first). Throws until `ready` resolves, on every runtime: `node:net`
   * binds asynchronously, so no runtime reports an address earlier.
   */
  readonly addr: A;
  /**
   * Resolves with the bound address once the server listens. If it cannot listen (a port in
   * use, one it may not bind), it rejects, on every runtime, with an `Error` whose message says
   * where and why and whose `code` is the system's (`EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`);
   * `serve()` itself throws only for options it rejects. Await it, or the failure is an unhandled
   * rejection.
   */
  readonly ready: Promise<A>;
  /**
   * Resolves once the server has shut down and every connection is closed (at once if it never
   * listened).
   */
  readonly finished: Promise<void>;
  /**
   * Stops accepting connections, closes idle ones at once, lets requests in progress finish
   * (their responses carry `Connection: close`) for up to `shutdownTimeout`, drops what is left,
   * and resolves when all connections are closed.
   */
  shutdown(): Promise<void>;
}

const DEFAULT_PORT = 8080;
const DEFAULT_HOSTNAME = "0.0.0.0";

/** Writes a log entry to the console: the default of `onLog`. */
function logToConsole(entry: LogEntry): void {
  if (entry.error === undefined) console.error(entry.message);
  else console.error(`${entry.message}:`, entry.error);
}

/** Checks that a timeout is a whole number of milliseconds, or Infinity for none. */
function checkTimeout(name: string, value: number): number {
  if (value === Infinity) return value;
  return checkInteger(name, value, 1);
}

/** Checks that a numeric option is a whole number in range. */
function checkInteger(
  name: string,
  value: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Cannot serve: ${name} must be an integer from ${min} to ${max}, got ${value}`,
    );
  }
  return value;
}

/**
 * Serves HTTP/1.1 on a TCP port: each request goes to `handler`, whose `Response` is sent back.
 *
 * @param options Where to listen, limits, hooks; see {@linkcode ServeOptions}.
 * @param handler Answers each request.
 * @returns The running server.
 *
 * @example Serving on a free port, then shutting down
 * ```ts
 * import { serve } from "jsr:@wireserve/wireserve";
 * const server = serve({ port: 0, hostname: "127.0.0.1" }, () => new Response("hi"));
 * const { port } = await server.ready;
 * const response = await fetch(`http://127.0.0.1:${port}/`);
 * console.log(await response.text()); // "hi"
 * await server.shutdown();
 * ```
 */
export function serve(options: ServeOptions, handler: Handler): Server;
/**
 * Serves HTTP/1.1 on port 8080 with the default options.
 *
 * @param handler Answers each request.
 * @returns The running server.
 */
export function serve(handler: Handler): Server;
/**
 * Serves HTTP/1.1 on a Unix domain socket: each request goes to `handler`.
 *
 * @param options The socket's path and mode, limits, hooks; see {@linkcode UnixServeOptions}.
 * @param handler Answers each request; its addresses are `UnixAddr` (or, with `proxyProtocol`,
 * the client's `NetAddr`).
 * @returns The running server, whose address is the socket's.
 *
 * @example Serving on a socket file for nginx
 * ```ts
 * import { serve } from "jsr:@wireserve/wireserve";
 * const server = serve({ path: "/tmp/app.sock", mode: 0o660 }, () => new Response("hi"));
 * console.log((await server.ready).path); // "/tmp/app.sock"
 * await server.shutdown();
 * ```
 */
export function serve(
  options: UnixServeOptions,
  handler: Handler<ConnInfo<Addr>>,
): Server<UnixAddr>;
export function serve(
  first: ServeOptions | UnixServeOptions | Handler,
  second?: Handler | Handler<ConnInfo<Addr>>,
): Server<Addr> {
  const options = (typeof first === "function" ? {} : first) as AnyServeOptions;
  // On TCP every address is a NetAddr, so a TCP handler may take ConnInfo and still be given this.
  const handler = (typeof first === "function" ? first : second) as Handler<ConnInfo<Addr>>;
  if (typeof handler !== "function") {
    throw new TypeError("Cannot serve: the handler is not a function");
  }
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const name of Object.keys(limits) as Array<keyof Limits>) {
    limits[name] = checkInteger(name, options[name] ?? DEFAULT_LIMITS[name], 1);
  }
  SERVER_LIMITS.add(limits);
  const timeouts: Timeouts = { ...DEFAULT_TIMEOUTS };
  for (const name of Object.keys(timeouts) as Array<keyof Timeouts>) {
    timeouts[name] = checkTimeout(name, options[name] ?? DEFAULT_TIMEOUTS[name]);
  }
  const port = checkInteger("port", options.port ?? DEFAULT_PORT, 0, 65535);
  const hostname = options.hostname ?? DEFAULT_HOSTNAME;
  const path = options.path;
  if (path !== undefined && (typeof path !== "string" || path === "" || path.includes("\0"))) {
    throw new TypeError(`Cannot serve: path ${JSON.stringify(path)} is not a file path`);
  }
  const mode = options.mode === undefined
    ? undefined
    : checkInteger("mode", options.mode, 0, 0o777);
  // A pool worker shares its port with the other workers unless told otherwise.
  const reusePort = options.reusePort ?? (WORKER_ID !== null && path === undefined);
  if (reusePort && path !== undefined) {
    throw new TypeError("Cannot serve: reusePort is for TCP ports, not Unix sockets");
  }
  const maxConnections = checkInteger("maxConnections", options.maxConnections ?? 10_000, 1);
  const maxPerClient = options.maxConnectionsPerClient === undefined ||
      options.maxConnectionsPerClient === Infinity
    ? Infinity
    : checkInteger("maxConnectionsPerClient", options.maxConnectionsPerClient, 1);
  const shutdownTimeout = checkTimeout("shutdownTimeout", options.shutdownTimeout ?? 10_000);
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new TypeError("Cannot serve HTTPS: both cert and key are needed");
  }
  const tls = options.cert !== undefined && options.key !== undefined
    ? { cert: options.cert, key: options.key }
    : undefined;
  const proxyProtocol = options.proxyProtocol === undefined ? null : {
    trusted: addressMatcher(
      options.proxyProtocol.trusted.filter((entry) => entry !== "unix"),
      "proxyProtocol.trusted",
    ),
    trustUnix: options.proxyProtocol.trusted.includes("unix"),
    timeout: checkTimeout("proxyProtocol.timeout", options.proxyProtocol.timeout ?? 5000),
    maxHeaderBytes: checkInteger(
      "proxyProtocol.maxHeaderBytes",
      options.proxyProtocol.maxHeaderBytes ?? PROXY_DEFAULT_MAX_BYTES,
      232, // the largest address block (two Unix paths) and the 16 bytes before it
      16 + 0xffff,
    ),
  };
  const clock = new CoarseClock(options.clock ?? SYSTEM_CLOCK);
  const log = options.onLog ?? logToConsole;
  // The default onError logs and answers a plain 500: details belong in the log, not the response.
  const defaultOnError = (error: unknown): Response => {
    log({ level: "error", message: "wireserve: handler failed", error });
    return plainResponse(500);
  };
  const accessLogSettings = accessLogOptions(options.accessLog);
  const accessLog = accessLogSettings === null ? null : new AccessLog(
    accessLogSettings,
    (error) => log({ level: "error", message: "wireserve: access log write failed", error }),
  );
  const driverOptions: DriverOptions = {
    ...limits,
    limits,
    ...timeouts,
    handler,
    onError: options.onError ?? defaultOnError,
    log,
    maxRequestsPerConnection: checkInteger(
      "maxRequestsPerConnection",
      options.maxRequestsPerConnection ?? 1000,
      1,
    ),
    abortOnDisconnect: options.abortOnDisconnect === true,
    clock,
    accessLog,
  };
  // HTTPS defaults to the profile's TLS transport (node:tls on Deno: see RuntimeProfile), and a
  // shared port on Deno without --unstable-net to node:net, which has reusePort without the flag.
  // TLS after a PROXY protocol header needs a TLS socket over an accepted TCP one: node:tls.
  const tlsTransport = proxyProtocol !== null ? "node" : RUNTIME_PROFILE.tlsTransport;
  if (
    tls !== undefined && proxyProtocol !== null && options.transport !== undefined &&
    options.transport !== "node"
  ) {
    throw new TypeError(
      "Cannot serve HTTPS with the PROXY protocol on this transport: only the node transport " +
        "starts TLS after the header (leave transport unset)",
    );
  }
  const transport = typeof options.transport === "function" ? options.transport : transports[
    options.transport ??
      (tls !== undefined
        ? tlsTransport
        : reusePort && RUNTIME_PROFILE.name === "deno" && !DENO_REUSE_PORT
        ? "node"
        : RUNTIME_PROFILE.name)
  ];
  if (transport === undefined) {
    throw new TypeError(`Cannot serve: unknown transport ${String(options.transport)}`);
  }

  const connections = new Set<HttpConnection>();
  // Connections whose PROXY protocol header has not arrived yet.
  const gates = new Set<ProxyProtocolGate>();
  const perClient = new Map<string, number>();
  let listener: TransportListener | null = null;
  let shuttingDown = false;
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);

  // One timer for every connection's deadlines: a sweep a few times per shortest timeout, instead
  // of a timer set and cleared per connection per request.
  const shortest = Math.min(...Object.values(timeouts), proxyProtocol?.timeout ?? Infinity);
  const tick = Math.max(10, Math.min(1000, Math.floor(shortest / 4)));
  const stopSweep = (options.clock ?? SYSTEM_CLOCK).every(tick, () => {
    const now = clock.update();
    for (const connection of connections) connection.checkTimers(now);
    for (const gate of gates) if (gate.deadline !== 0 && now >= gate.deadline) gate.drop();
  });
  let shutdownTimer: ReturnType<typeof setTimeout> | undefined;

  const checkFinished = () => {
    if (shuttingDown && listener !== null && connections.size === 0 && gates.size === 0) {
      stopSweep();
      clearTimeout(shutdownTimer);
      accessLog?.flush(); // the last entries are written by the time finished resolves
      if (path !== undefined) removeSocketFile(path);
      resolveFinished();
    }
  };
  const onClosed = (connection: HttpConnection) => {
    connections.delete(connection);
    if (maxPerClient !== Infinity) {
      const host = connection.remoteHost;
      const count = (perClient.get(host) ?? 1) - 1;
      if (count === 0) perClient.delete(host);
      else perClient.set(host, count);
    }
    checkFinished();
  };
  // The answer to a connection over the caps, rebuilt when its Date changes.
  let refusal: Uint8Array = EMPTY;
  let refusalDate = "";
  const refuse = (connection: TransportConnection): ConnectionEvents => {
    // Cheap: one write of bytes built once per second, and a close, no parsing.
    const date = clock.date;
    if (date !== refusalDate) {
      refusal = errorResponseBytes(503, date);
      refusalDate = date;
    }
    connection.write(refusal);
    connection.end();
    return IGNORED_EVENTS;
  };
  const accept = (connection: TransportConnection): ConnectionEvents => {
    if (shuttingDown) {
      connection.destroy();
      return IGNORED_EVENTS;
    }
    if (connections.size >= maxConnections) return refuse(connection);
    if (maxPerClient !== Infinity) {
      const host = addressName(connection.remoteAddr);
      const count = perClient.get(host) ?? 0;
      if (count >= maxPerClient) return refuse(connection);
      perClient.set(host, count + 1);
    }
    const httpConnection = new HttpConnection(connection, driverOptions, onClosed);
    connections.add(httpConnection);
    return httpConnection;
  };
  // With the PROXY protocol, a connection from a trusted balancer is accepted once its header is
  // read, as the client the header names (the caps above count that client); any other is closed.
  // With TLS, the header comes first and the handshake after it, on the same connection.
  const passPlain: PassProxied = (transport, header, rest) => {
    const events = accept(new ProxiedConnection(transport, header));
    if (rest.length > 0) events.onData(rest);
    return events;
  };
  const passToTls: PassProxied = (transport, header, rest) => {
    if (transport.startTls === undefined) {
      transport.destroy(); // a custom transport that cannot start TLS late: refused in serve()
    } else {
      transport.startTls(rest, (secure) => accept(new ProxiedConnection(secure, header)));
    }
    return IGNORED_EVENTS;
  };
  const onGateDone = (gate: ProxyProtocolGate) => {
    gates.delete(gate);
    checkFinished();
  };
  const acceptConnection = proxyProtocol === null ? accept : (
    connection: TransportConnection,
  ): ConnectionEvents => {
    const peer = connection.remoteAddr;
    if (
      shuttingDown ||
      !(peer.transport === "unix" ? proxyProtocol.trustUnix : proxyProtocol.trusted(peer.hostname))
    ) {
      connection.destroy();
      return IGNORED_EVENTS;
    }
    const deadline = deadlineAfter(clock.now, proxyProtocol.timeout);
    const gate = new ProxyProtocolGate(
      connection,
      proxyProtocol.maxHeaderBytes,
      deadline,
      tls === undefined ? passPlain : passToTls,
      onGateDone,
    );
    gates.add(gate);
    return gate;
  };
  const bound = (result: TransportListener): Addr => {
    listener = result;
    options.onListen?.(result.addr);
    if (shuttingDown) closeAll();
    return result.addr;
  };
  const closeAll = () => {
    listener?.close();
    for (const connection of connections) connection.close();
    for (const gate of gates) gate.drop();
    if (shutdownTimeout !== Infinity && connections.size > 0) {
      shutdownTimer = setTimeout(() => {
        for (const connection of connections) connection.destroy();
      }, shutdownTimeout);
    }
    checkFinished();
  };

  // Deno.listen and Bun.listen bind at once and throw if they cannot; node:net reports either
  // later. One behaviour on every runtime: the listener (addr, onListen) comes a microtask later
  // at the earliest, and a failure to listen rejects `ready` with the same error everywhere.
  const handshake = Math.min(timeouts.headTimeout, timeouts.idleTimeout);
  const listenOptions: ListenOptions = {
    hostname,
    port,
    path,
    reusePort,
    tls,
    deferTls: tls !== undefined && proxyProtocol !== null,
    handshakeTimeout: handshake === Infinity ? undefined : handshake,
  };
  let listening: Promise<TransportListener>;
  if (path === undefined) {
    try {
      listening = Promise.resolve(transport(listenOptions, acceptConnection));
    } catch (error) {
      listening = Promise.reject(error);
    }
  } else {
    listening = claimSocketPath(path)
      .then(() => transport(listenOptions, acceptConnection))
      .then(async (result) => {
        try {
          if (mode !== undefined) await nodeFs.chmod(path, mode);
        } catch (error) {
          result.close();
          throw error;
        }
        return result;
      });
  }
  const ready = listening.then(bound, (error) => {
    stopSweep();
    resolveFinished(); // nothing ran, nothing to wait for
    throw listenError(error, path ?? formatHost({ hostname, port, transport: "tcp" }));
  });
  const shutdown = (): Promise<void> => {
    if (!shuttingDown) {
      shuttingDown = true;
      if (listener !== null) closeAll();
    }
    return finished;
  };
  if (options.signal !== undefined) {
    if (options.signal.aborted) shutdown();
    else options.signal.addEventListener("abort", () => shutdown(), { once: true });
  }
  const server: Server<Addr> = {
    get addr(): Addr {
      if (listener === null) {
        throw new Error("Cannot read addr: the server is not listening, await server.ready");
      }
      return listener.addr;
    },
    ready,
    finished,
    shutdown,
  };
  if (WORKER_ID !== null) joinPool(server);
  return server;
}

/** What `serve()` reads of either kind of options. */
interface AnyServeOptions extends Omit<ServeOptions, "path" | "onListen"> {
  path?: string;
  mode?: number;
  onListen?: (addr: Addr) => void;
}

/**
 * Makes `path` free for a Unix socket: nothing there, or a socket file nobody listens on any
 * more (left by a server that crashed), which is removed. A live socket, or a file of any other
 * kind, is refused with `EADDRINUSE`: never delete what may be someone else's.
 */
async function claimSocketPath(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await nodeFs.lstat(path)).isSocket();
  } catch (error) {
    if ((error as { code?: unknown }).code === "ENOENT") return;
    throw error;
  }
  const inUse = (why: string) =>
    Object.assign(new Error(why), { code: "EADDRINUSE" as string | undefined });
  if (!isSocket) throw inUse("the path exists and is not a socket");
  const answered = await new Promise<string>((resolve) => {
    const probe = nodeNet.connect({ path });
    const timer = setTimeout(() => finish("ETIMEDOUT"), 1000);
    const finish = (result: string) => {
      clearTimeout(timer);
      probe.destroy();
      resolve(result);
    };
    probe.once("connect", () => finish("connected"));
    probe.once("error", (error: Error & { code?: string }) => finish(error.code ?? "error"));
  });
  // Only a refused connection proves the file stale; anything else may be a live server.
  if (answered !== "ECONNREFUSED") throw inUse("another server is listening on it");
  await nodeFs.unlink(path);
}

/**
 * Removes a Unix socket file once its server has closed. Node's and Bun's listeners remove it
 * themselves, Deno's not always by the time the server has finished; a file that is no longer a
 * socket is left alone.
 */
function removeSocketFile(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch { /* already gone */ }
}

/**
 * What `ready` rejects with when the server cannot listen (`where` is `host:port` or a path): one message and one `code` on every
 * runtime (Deno's `AddrInUse`, Bun's "Failed to listen at" and Node's `listen EADDRINUSE` all
 * become `Cannot listen on 127.0.0.1:8080: the address is in use`, code `EADDRINUSE`), with the
 * runtime's own error as its `cause`. A `TypeError` (a transport this runtime does not have) is
 * left as it is.
 */
function listenError(error: unknown, where: string): Error {
  if (error instanceof TypeError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  const reason = code === "EADDRINUSE"
    ? "the address is in use"
    : code === "EACCES"
    ? "permission denied"
    : code === "EADDRNOTAVAIL"
    ? "the address is not available on this machine"
    : error instanceof Error
    ? error.message
    : String(error);
  return Object.assign(new Error(`Cannot listen on ${where}: ${reason}`, { cause: error }), {
    code: typeof code === "string" ? code : undefined,
  });
}

//#endregion
//#region Workers

// Several copies of a server on one port, one per core: each worker thread runs a module that
// calls serve(), every listener binds the port with SO_REUSEPORT, and the kernel spreads new
// connections across them. The pool here starts the workers, restarts one that dies (with a
// back-off), and stops them together. Worker threads, not processes, on every runtime: they take
// the runtime's own flags and permissions with them (a Deno child process would need its flags
// rebuilt, which Deno cannot report), and they measured within 3 % of processes (README, "Deploying").

/** The `workerData` key that marks a thread as a pool worker, and carries its number. */
const WORKER_KEY = "wireserve.worker";

/** What the pool and a worker say to each other over the thread's message port. */
type WorkerMessage =
  | { readonly type: "listening"; readonly addr: Addr }
  | { readonly type: "shutdown" };

/** This thread's pool worker number, or null when it is not a pool worker. */
const WORKER_ID: number | null = (() => {
  const data = nodeWorkers.isMainThread ? undefined : nodeWorkers.workerData as unknown;
  const id = (data as Record<string, unknown> | null | undefined)?.[WORKER_KEY];
  return typeof id === "number" ? id : null;
})();

/** The servers this worker runs, shut down together when the pool asks. */
const WORKER_SERVERS = new Set<Server<Addr>>();

/**
 * Joins a server started in a pool worker to the pool: it reports the address it listens on, and
 * shuts down when the pool asks. The worker's port listener is unreferenced, so that a worker
 * whose servers have all finished exits by itself.
 */
function joinPool(server: Server<Addr>): void {
  const port = nodeWorkers.parentPort;
  if (port === null) return;
  if (WORKER_SERVERS.size === 0) {
    port.on("message", (message: WorkerMessage) => {
      if (message?.type === "shutdown") { for (const each of WORKER_SERVERS) each.shutdown(); }
    });
    (port as { unref?: () => void }).unref?.();
  }
  WORKER_SERVERS.add(server);
  server.ready.then((addr) => port.postMessage({ type: "listening", addr }), () => {});
  server.finished.then(() => WORKER_SERVERS.delete(server));
}

/** Options for {@linkcode startWorkers}. */
export interface WorkersOptions {
  /**
   * The module each worker runs, as a URL or an absolute path: it calls {@linkcode serve} (in a
   * worker, `reusePort` defaults to true, so every worker can bind the same port).
   */
  module: string | URL;
  /**
   * How many workers: a number, or `"auto"` for one per core this process may use
   * (`os.availableParallelism()`).
   * @default {"auto"}
   */
  count?: number | "auto";
  /** Passed to each worker as `workerData.data` (cloned, as `postMessage` clones). */
  data?: unknown;
  /**
   * How long `shutdown()` lets the workers finish their requests (each worker's own
   * `shutdownTimeout` applies inside it) before the stragglers are terminated.
   * @default {10000}
   */
  shutdownTimeout?: number;
  /**
   * Shut down on SIGINT and SIGTERM, as the command line does.
   * @default {true}
   */
  signals?: boolean;
  /** Receives what the pool logs: a worker that died and its restart. Default: `console.error`. */
  onLog?: (entry: LogEntry) => void;
}

/** A running pool of workers, returned by {@linkcode startWorkers}. */
export interface WorkerPool {
  /** How many workers the pool keeps running. */
  readonly size: number;
  /**
   * Resolves with each worker's address once every worker listens; rejects if a worker fails
   * before it listens (a port in use, an error in the module), after stopping the others.
   */
  readonly ready: Promise<Addr[]>;
  /** Resolves once every worker has exited after `shutdown()`. */
  readonly finished: Promise<void>;
  /**
   * Asks every worker to shut down gracefully (each server's `shutdown()`), terminates those
   * still running after `shutdownTimeout`, and resolves when all have exited.
   */
  shutdown(): Promise<void>;
}

/** The first restart of a worker that died waits this long; each further one twice as long. */
const RESTART_FIRST_MILLISECONDS = 100;
/** The longest wait before a restart. */
const RESTART_MAX_MILLISECONDS = 10_000;
/** A worker that ran this long before it died is restarted at once: its failure was not a loop. */
const RESTART_RESET_MILLISECONDS = 10_000;

/**
 * Runs `count` copies of a server module in worker threads that share one port (SO_REUSEPORT:
 * the kernel spreads connections across them), for a server that uses every core. A worker that
 * dies (an uncaught exception, `process.exit`) is logged and restarted, at once if it had run
 * for a while, else after a back-off that doubles to 10 s; the other workers go on serving.
 * State lives per worker: each has its own rate limiter buckets, file cache and connection caps.
 *
 * @param options The module, the count, shutdown.
 * @returns The pool.
 *
 * @example Four workers serving app.ts, which calls `serve({ port: 8080 }, handler)`
 * ```ts ignore
 * import { startWorkers } from "jsr:@wireserve/wireserve";
 * const pool = startWorkers({ module: new URL("./app.ts", import.meta.url), count: 4 });
 * await pool.ready;
 * ```
 */
export function startWorkers(options: WorkersOptions): WorkerPool {
  return startPool(options, null);
}

/** The `workerData` key under which the command line passes its arguments to its workers. */
const CLI_ARGV_KEY = "wireserve.argv";

/** {@linkcode startWorkers}, and for the command line the arguments its workers run with. */
function startPool(options: WorkersOptions, cliArgv: string[] | null): WorkerPool {
  const count = options.count === undefined || options.count === "auto"
    ? nodeOs.availableParallelism()
    : checkInteger("count", options.count, 1, 1024);
  const shutdownTimeout = checkTimeout("shutdownTimeout", options.shutdownTimeout ?? 10_000);
  const log = options.onLog ?? logToConsole;
  const module = options.module instanceof URL || /^[a-z][a-z0-9+.-]*:/i.test(options.module)
    ? new URL(options.module)
    : nodeUrl.pathToFileURL(options.module);

  const running = new Set<nodeWorkers.Worker>();
  const addresses: Array<Addr | undefined> = new Array(count);
  let stopping = false;
  let readyCount = 0;
  let resolveReady!: (addrs: Addr[]) => void;
  let rejectReady!: (error: unknown) => void;
  const ready = new Promise<Addr[]>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const restartTimers = new Set<ReturnType<typeof setTimeout>>();

  const start = (id: number, failures: number) => {
    const worker = new nodeWorkers.Worker(module, {
      workerData: { [WORKER_KEY]: id, [CLI_ARGV_KEY]: cliArgv, data: options.data },
    });
    const startedAt = Date.now();
    let listening = false;
    let failure: unknown = null;
    running.add(worker);
    worker.on("message", (message: WorkerMessage) => {
      if (message?.type !== "listening" || listening) return;
      listening = true;
      if (addresses[id] === undefined) {
        addresses[id] = message.addr;
        if (++readyCount === count) resolveReady(addresses as Addr[]);
      }
    });
    worker.on("error", (error: unknown) => failure = error);
    worker.on("exit", (code: number) => {
      running.delete(worker);
      if (stopping) {
        if (running.size === 0) {
          clearTimeout(killTimer);
          resolveFinished();
        }
        return;
      }
      const why = failure ?? new Error(`worker ${id} exited with code ${code}`);
      if (addresses[id] === undefined) {
        // It never listened: the module or the port is wrong, and a restart would fail the same.
        rejectReady(why);
        shutdown();
        return;
      }
      const ranLong = Date.now() - startedAt >= RESTART_RESET_MILLISECONDS;
      const next = ranLong ? 0 : failures + 1;
      const wait = next === 0
        ? 0
        : Math.min(RESTART_MAX_MILLISECONDS, RESTART_FIRST_MILLISECONDS * 2 ** (next - 1));
      log({
        level: "error",
        message: `wireserve: worker ${id} died; restarting in ${wait} ms`,
        error: why,
      });
      const timer = setTimeout(() => {
        restartTimers.delete(timer);
        if (!stopping) start(id, next);
      }, wait);
      restartTimers.add(timer);
    });
  };

  const onSignal = () => void shutdown();
  const shutdown = (): Promise<void> => {
    if (stopping) return finished;
    stopping = true;
    if (options.signals !== false) {
      nodeProcess.off("SIGINT", onSignal);
      nodeProcess.off("SIGTERM", onSignal);
    }
    for (const timer of restartTimers) clearTimeout(timer);
    if (running.size === 0) {
      resolveFinished(); // nothing left to stop, and no timer left to hold the process
      return finished;
    }
    for (const worker of running) worker.postMessage({ type: "shutdown" } satisfies WorkerMessage);
    if (shutdownTimeout !== Infinity) {
      // A little past the workers' own grace period, so that theirs decides, not this one.
      killTimer = setTimeout(() => {
        for (const worker of running) worker.terminate();
      }, shutdownTimeout + 1000);
    }
    return finished;
  };
  if (options.signals !== false) {
    nodeProcess.on("SIGINT", onSignal);
    nodeProcess.on("SIGTERM", onSignal);
  }
  for (let id = 0; id < count; id++) start(id, 0);
  ready.catch(() => {}); // a caller that only awaits finished must not see an unhandled rejection
  return { size: count, ready, finished, shutdown };
}

//#endregion
//#region Router

/**
 * The parameters of a matched route, decoded: each `:name` segment under its name, and what a
 * trailing `*` matched under `"*"` (its segments decoded one by one and joined with `/`; none of
 * them contains `/` or `\`, so the value's slashes are the path's own). A `:name` value is one
 * whole segment and may contain `/` or `\` where the client encoded them (`a%2Fb` gives `a/b`):
 * check it before using it as a file name.
 */
export type RouteParams = Readonly<Record<string, string>>;

/**
 * A route's handler: a {@linkcode Handler} that also receives the route's parameters. Any
 * `Handler` is a `RouteHandler` too: it just ignores the third argument.
 *
 * @typeParam Info What the server passes as the second argument: {@linkcode ConnInfo} under
 * wireserve, `Deno.ServeHandlerInfo` under `Deno.serve`, the `Server` under `Bun.serve`.
 */
export type RouteHandler<Info = ConnInfo> = (
  request: Request,
  info: Info,
  params: RouteParams,
) => Response | Promise<Response>;

/** Options for {@linkcode Router}. */
export interface RouterOptions<Info = ConnInfo> {
  /**
   * Answers a request whose path no route matches.
   * @default {a plain-text 404}
   */
  notFound?: (request: Request, info: Info) => Response | Promise<Response>;
}

/** One method's route at the node where a pattern ends. */
interface RouteEntry<Info> {
  handler: RouteHandler<Info>;
  /** The names of the pattern's parameters in order, `"*"` last for a wildcard. */
  names: string[];
}

/** Routes ending at one node: method (or `"*"` for {@linkcode Router.all}) to entry. */
type RouteEndpoint<Info> = Map<string, RouteEntry<Info>>;

/**
 * A node of the segment tree. Static children sit in a `Map`, so finding one costs the same
 * however many routes there are; a node has at most one parameter child and one wildcard.
 */
interface RouteNode<Info> {
  statics: Map<string, RouteNode<Info>> | null;
  param: RouteNode<Info> | null;
  /** Routes whose pattern ends in `*` here. */
  wildcard: RouteEndpoint<Info> | null;
  /** Routes whose pattern ends exactly here. */
  endpoint: RouteEndpoint<Info> | null;
}

/** A parameter name: what a JavaScript identifier made of ASCII may be. */
const PARAM_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function newRouteNode<Info>(): RouteNode<Info> {
  return { statics: null, param: null, wildcard: null, endpoint: null };
}

/**
 * Routes requests by method and path to handlers, on the fetch API: `router.fetch` is a
 * {@linkcode Handler}, for wireserve's `serve`, `Deno.serve` and `Bun.serve` alike.
 *
 * Patterns are paths made of segments:
 * - a static segment matches itself, compared with the request's segment after percent-decoding
 *   (write `/café`, not `/caf%C3%A9`);
 * - `:name` matches any one non-empty segment and hands it, decoded, to the handler as
 *   `params.name`;
 * - a final `*` matches the rest of the path after its slash (possibly empty) as `params["*"]`.
 *   `/files/*` matches `/files/` and `/files/a/b`, not `/files`. It does not match a rest with an
 *   encoded `/` or `\` (`%2F`, `%5C`): joined, `a%2Fb` would read as `a/b` and `..%2Fx` as
 *   `../x`, which a handler that maps `params["*"]` to a file would follow out of its directory.
 *
 * When several patterns match, static beats parameter beats wildcard, segment by segment from the
 * left; if the more specific branch has no route for the method, the next one is tried. Matching
 * walks a tree of segments, so its cost grows with the depth of the path, not the number of routes.
 * A trailing slash is significant: `/a` and `/a/` are different paths.
 *
 * Answers the router gives itself:
 * - `HEAD` is served by the `GET` route (unless a `HEAD` route exists) and the body is dropped, as
 *   RFC 9110 §9.3.2 asks: "The HEAD method is identical to GET except that the server MUST NOT send
 *   content in the response". Every response to HEAD loses its body, so this holds under any server.
 * - a path routed for other methods only: 405 with `Allow` (RFC 9110 §15.5.6);
 * - `OPTIONS` without an `OPTIONS` route: 204 with `Allow` (RFC 9110 §9.3.7);
 * - a segment with a bad percent-escape: 400; no matching path: `notFound`, a plain 404 by default.
 *
 * Responses to HEAD, the router's own and `notFound`'s included, never have a body.
 *
 * @typeParam Info What the server passes as the handler's second argument.
 *
 * @example A small site, served by wireserve
 * ```ts
 * import { Router, serve } from "jsr:@wireserve/wireserve";
 *
 * const router = new Router()
 *   .get("/", () => new Response("home"))
 *   .get("/users/:id", (_request, _info, params) => Response.json({ id: params.id }))
 *   .post("/users", async (request) => new Response(await request.text(), { status: 201 }))
 *   .get("/files/*", (_request, _info, params) => new Response(`file ${params["*"]}`));
 * serve({ port: 8080 }, router.fetch);
 * ```
 *
 * @example Under Deno.serve
 * ```ts
 * import { Router } from "jsr:@wireserve/wireserve";
 * const router = new Router<Deno.ServeHandlerInfo>().get("/", () => new Response("hi"));
 * Deno.serve(router.fetch);
 * ```
 */
export class Router<Info = ConnInfo> {
  #root: RouteNode<Info> = newRouteNode();
  #notFound: (request: Request, info: Info) => Response | Promise<Response>;

  /**
   * Makes an empty router.
   *
   * @param options The `notFound` handler.
   */
  constructor(options: RouterOptions<Info> = {}) {
    this.#notFound = options.notFound ?? (() => routerResponse(404));
  }

  /**
   * Routes `GET` (and `HEAD`, without the body) requests for `pattern` to `handler`.
   *
   * @param pattern A path pattern such as `/users/:id` or `/files/*`.
   * @param handler Answers the requests; gets the decoded parameters as third argument.
   * @returns This router, to chain calls.
   * @throws {TypeError} For a malformed pattern, or a method and pattern routed already.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().get("/hello/:name", (_request, _info, { name }) => new Response(`hello ${name}`));
   * ```
   */
  get(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("GET", pattern, handler);
  }

  /**
   * Routes `HEAD` requests for `pattern` to `handler`, instead of the `GET` route. The response
   * body is dropped all the same.
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().head("/ping", () => new Response(null, { headers: { "x-alive": "1" } }));
   * ```
   */
  head(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("HEAD", pattern, handler);
  }

  /**
   * Routes `POST` requests for `pattern` to `handler`.
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().post("/echo", async (request) => new Response(await request.text()));
   * ```
   */
  post(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("POST", pattern, handler);
  }

  /**
   * Routes `PUT` requests for `pattern` to `handler`.
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().put("/notes/:id", () => new Response(null, { status: 204 }));
   * ```
   */
  put(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("PUT", pattern, handler);
  }

  /**
   * Routes `PATCH` requests for `pattern` to `handler`.
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().patch("/notes/:id", () => new Response(null, { status: 204 }));
   * ```
   */
  patch(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("PATCH", pattern, handler);
  }

  /**
   * Routes `DELETE` requests for `pattern` to `handler`.
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().delete("/notes/:id", () => new Response(null, { status: 204 }));
   * ```
   */
  delete(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("DELETE", pattern, handler);
  }

  /**
   * Routes `OPTIONS` requests for `pattern` to `handler`, instead of the automatic answer (204
   * with `Allow`).
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().options("/api/*", () =>
   *   new Response(null, { status: 204, headers: { "access-control-allow-origin": "*" } }));
   * ```
   */
  options(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("OPTIONS", pattern, handler);
  }

  /**
   * Routes requests for `pattern` with any method to `handler`; a route for the request's own
   * method on the same pattern is preferred. A path routed with `all` never answers 405.
   *
   * @param pattern A path pattern.
   * @param handler Answers the requests; `HEAD` responses lose their body all the same.
   * @returns This router.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().all("/proxy/*", (request) => fetch(request));
   * ```
   */
  all(pattern: string, handler: RouteHandler<Info>): this {
    return this.on("*", pattern, handler);
  }

  /**
   * Routes requests with `method` for `pattern` to `handler`: the general form of
   * {@linkcode Router.get} and the others, for methods such as `PROPFIND`.
   *
   * @param method The method, case-sensitive as RFC 9110 §9.1 says; `"*"` for any.
   * @param pattern A path pattern.
   * @param handler Answers the requests.
   * @returns This router.
   * @throws {TypeError} For a method that is not a token, a malformed pattern, or a method and
   * pattern routed already.
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * new Router().on("PROPFIND", "/dav/*", () => new Response(null, { status: 207 }));
   * ```
   */
  on(method: string, pattern: string, handler: RouteHandler<Info>): this {
    if (method !== "*" && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(method)) {
      throw new TypeError(`Cannot add route: ${JSON.stringify(method)} is not a method`);
    }
    if (typeof handler !== "function") {
      throw new TypeError(`Cannot add route ${method} ${pattern}: the handler is not a function`);
    }
    const fail = (why: string): never => {
      throw new TypeError(`Cannot add route ${method} ${JSON.stringify(pattern)}: ${why}`);
    };
    if (typeof pattern !== "string" || pattern.charCodeAt(0) !== 0x2f) {
      fail("a pattern starts with /");
    }
    const segments = pattern.slice(1).split("/");
    const names: string[] = [];
    let node = this.#root;
    let endpoint: RouteEndpoint<Info> | null = null;
    for (let i = 0; i < segments.length; i++) {
      const segment = segments[i];
      if (segment === "*") {
        if (i !== segments.length - 1) fail("* may only be the last segment");
        names.push("*");
        endpoint = node.wildcard ??= new Map();
      } else if (segment.charCodeAt(0) === 0x3a) {
        const name = segment.slice(1);
        if (!PARAM_NAME.test(name) || name === "__proto__") {
          fail(`${JSON.stringify(segment)} is not a parameter name`);
        }
        if (names.includes(name)) fail(`parameter :${name} appears twice`);
        names.push(name);
        node = node.param ??= newRouteNode();
      } else {
        if (segment.includes("*")) fail("* may only stand alone as the last segment");
        node.statics ??= new Map();
        let child = node.statics.get(segment);
        if (child === undefined) node.statics.set(segment, child = newRouteNode());
        node = child;
      }
    }
    endpoint ??= node.endpoint ??= new Map();
    if (endpoint.has(method)) fail("it is routed already");
    endpoint.set(method, { handler, names });
    return this;
  }

  /**
   * Answers a request: the router as a {@linkcode Handler}, bound, so it can be passed around.
   *
   * @param request The request.
   * @param info What the server knows about the connection; handed on to the route's handler.
   * @returns The route's response, or the router's own 400, 404, 405 or 204 (OPTIONS).
   *
   * @example
   * ```ts
   * import { Router } from "jsr:@wireserve/wireserve";
   * const router = new Router().get("/", () => new Response("home"));
   * const response = await router.fetch(new Request("http://localhost/"), undefined as never);
   * console.log(await response.text()); // "home"
   * ```
   */
  readonly fetch = (request: Request, info: Info): Response | Promise<Response> => {
    const result = this.#route(request, info);
    if (request.method !== "HEAD") return result;
    return result instanceof Promise ? result.then(withoutBody) : withoutBody(result);
  };

  /** Finds the route for a request and calls it, or answers 400, 404, 405 or 204 itself. */
  #route(request: Request, info: Info): Response | Promise<Response> {
    const segments = splitRoutePath(request.url);
    if (segments === null) return routerResponse(400);
    const method = request.method;
    const values: string[] = [];
    let found: RouteEntry<Info> | undefined;
    // The method's own route first, then GET for HEAD, then a route for any method.
    const pick = (endpoint: RouteEndpoint<Info>): boolean => {
      found = endpoint.get(method) ??
        (method === "HEAD" ? endpoint.get("GET") : undefined) ??
        endpoint.get("*");
      return found !== undefined;
    };
    if (this.#match(this.#root, segments, 0, values, pick)) {
      const entry = found as RouteEntry<Info>;
      const params: Record<string, string> = Object.create(null);
      for (let i = 0; i < entry.names.length; i++) params[entry.names[i]] = values[i];
      return entry.handler(request, info, params);
    }
    // No route for this method: is the path routed for others?
    const allowed = new Set<string>();
    this.#match(this.#root, segments, 0, [], (endpoint) => {
      for (const name of endpoint.keys()) allowed.add(name);
      return false; // visit every match
    });
    if (allowed.size === 0) return this.#notFound(request, info);
    if (allowed.has("GET")) allowed.add("HEAD");
    allowed.add("OPTIONS");
    const allow = [...allowed].join(", ");
    if (method === "OPTIONS") {
      return new Response(null, { status: 204, headers: { allow } });
    }
    return routerResponse(405, allow);
  }

  /**
   * Walks the tree depth first, static before parameter before wildcard, and calls `visit` for
   * each node where the path ends; stops as soon as `visit` returns true. `values` collects the
   * parameter values of the current branch, in pattern order.
   */
  #match(
    node: RouteNode<Info>,
    segments: string[],
    index: number,
    values: string[],
    visit: (endpoint: RouteEndpoint<Info>) => boolean,
  ): boolean {
    if (index === segments.length) {
      return node.endpoint !== null && visit(node.endpoint);
    }
    const segment = segments[index];
    const child = node.statics?.get(segment);
    if (child !== undefined && this.#match(child, segments, index + 1, values, visit)) return true;
    if (node.param !== null && segment !== "") {
      values.push(segment);
      if (this.#match(node.param, segments, index + 1, values, visit)) return true;
      values.pop();
    }
    if (node.wildcard !== null && !hasSeparator(segments, index)) {
      values.push(segments.slice(index).join("/"));
      if (visit(node.wildcard)) return true;
      values.pop();
    }
    return false;
  }
}

/** Whether a decoded segment from `index` on contains a path separator, `/` or `\`. */
function hasSeparator(segments: readonly string[], index: number): boolean {
  for (let i = index; i < segments.length; i++) {
    if (segments[i].includes("/") || segments[i].includes("\\")) return true;
  }
  return false;
}

/**
 * The path of a request URL as decoded segments: `/a/b%20c` gives `["a", "b c"]`, `/` gives
 * `[""]`. Null when a segment has a malformed percent-escape or one that is not UTF-8.
 */
function splitRoutePath(url: string): string[] | null {
  // request.url is always serialized by the URL parser: scheme "://" authority path [?query].
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return [""];
  let end = url.indexOf("?", start);
  if (end === -1) end = url.length;
  const hash = url.indexOf("#", start);
  if (hash !== -1 && hash < end) end = hash;
  const segments: string[] = [];
  let from = start + 1;
  while (true) {
    const slash = url.indexOf("/", from);
    const to = slash === -1 || slash > end ? end : slash;
    const raw = url.slice(from, to);
    if (raw.includes("%")) {
      try {
        segments.push(decodeURIComponent(raw));
      } catch {
        return null;
      }
    } else {
      segments.push(raw);
    }
    if (to === end) return segments;
    from = to + 1;
  }
}

/** The same response without its body, for HEAD; the body is cancelled so nothing leaks. */
async function withoutBody(response: Response): Promise<Response> {
  // A 101 cannot be rebuilt (Response only takes 200-599) and has no body anyway.
  const body = response.body;
  if (body === null || response.status < 200) return response;
  const headers = new Headers(response.headers);
  if (headers.has("content-length")) {
    body.cancel().catch(() => {});
  } else {
    // RFC 9110 §9.3.2: HEAD should get the fields GET would, Content-Length included. A body that
    // is there at once (a string, bytes) is measured; a live stream is not waited for.
    const prefix = await readAvailable(body.getReader()).catch(() => null);
    if (prefix?.done) headers.set("content-length", String(prefix.length));
    else prefix?.reader?.cancel().catch(() => {});
  }
  return new Response(null, { status: response.status, statusText: response.statusText, headers });
}

/** A short plain-text answer of the router's own. */
function routerResponse(status: number, allow?: string): Response {
  return plainResponse(status, allow === undefined ? undefined : { allow });
}

//#endregion
//#region HTTP semantics

// RFC 9110 beyond the message syntax, for answering a request about a representation: ranges,
// HTTP dates, entity tags, preconditions, content negotiation, content types and request paths.
// Pure functions over header values and sizes, with no file access, exported so that they can be
// tested and reused without files (by the static file server below, or by a handler that serves a
// blob or a database row).

/** A byte range of a representation, both ends inclusive as in `Content-Range`. */
export interface ByteRange {
  /** The first byte's offset. */
  start: number;
  /** The last byte's offset. */
  end: number;
}

/** The result of {@linkcode parseRange}. */
export type RangeResult =
  /** No Range header, a unit other than `bytes`, or a header to ignore: send the whole file. */
  | { readonly kind: "none" }
  /** The satisfiable ranges, clamped to the size, in the order the client asked for them. */
  | { readonly kind: "ranges"; readonly ranges: ByteRange[] }
  /** A valid header none of whose ranges is satisfiable: 416. */
  | { readonly kind: "unsatisfiable" };

/** The validators of a representation, for {@linkcode evaluatePreconditions}. */
export interface Validators {
  /** The current entity tag with its quotes (and `W/` if weak), or null when there is none. */
  etag?: string | null;
  /** The last modification time in milliseconds since the epoch, or null when unknown. */
  lastModified?: number | null;
}

/**
 * Range specs in one header beyond which the header is ignored and the whole file sent, as RFC
 * 9110 §14.2 allows ("A server MAY ignore the Range header field"): thousands of tiny ranges are a
 * way to make a server do much work for little.
 */
const MAX_RANGE_SPECS = 100;

const NONE: RangeResult = Object.freeze({ kind: "none" });
const UNSATISFIABLE: RangeResult = Object.freeze({ kind: "unsatisfiable" });

/** A run of decimal digits as a number; NaN for anything else. Huge values become Infinity. */
function parseDigits(text: string): number {
  if (text.length === 0) return NaN;
  let value = 0;
  for (let i = 0; i < text.length; i++) {
    const digit = text.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return NaN;
    value = value * 10 + digit;
  }
  return value > Number.MAX_SAFE_INTEGER ? Infinity : value;
}

/**
 * Parses a `Range` header against a representation of `size` bytes (RFC 9110 §14.1-§14.2).
 *
 * - `bytes=0-499` is bytes 0 to 499; `bytes=9500-` is byte 9500 to the end; `bytes=-500` is the
 *   last 500 bytes. A last position past the end is clamped to the end (§14.1.1).
 * - Ranges that start past the end, and `-0`, are unsatisfiable; if every range is, the result is
 *   `unsatisfiable` (416), otherwise those ranges are left out (§14.1.1: "the server SHOULD treat
 *   it as satisfiable if at least one range-spec is satisfiable").
 * - A unit other than `bytes` is ignored (§14.2: "An origin server MUST ignore a Range header field
 *   that contains a range unit it does not understand"); so is invalid syntax (a last position
 *   before the first, a sign, a missing number) and a header with more than 100 ranges, which a
 *   server MAY ignore.
 *
 * A zero-length representation satisfies no range.
 *
 * @param header The `Range` header value, or null when absent.
 * @param size The representation's length in bytes.
 * @returns `none`, the satisfiable `ranges` (inclusive ends, in request order), or `unsatisfiable`.
 *
 * @example
 * ```ts
 * import { parseRange } from "jsr:@wireserve/wireserve";
 * parseRange("bytes=-500", 10000); // { kind: "ranges", ranges: [{ start: 9500, end: 9999 }] }
 * parseRange("bytes=10000-", 10000); // { kind: "unsatisfiable" }
 * parseRange("items=0-1", 10000); // { kind: "none" }
 * ```
 */
export function parseRange(header: string | null, size: number): RangeResult {
  if (header === null) return NONE;
  const equals = header.indexOf("=");
  // Range units are compared case-insensitively (RFC 9110 §14.1); no whitespace around "=".
  if (equals !== 5 || header.slice(0, 5).toLowerCase() !== "bytes") return NONE;
  const ranges: ByteRange[] = [];
  let specs = 0;
  let from = 6;
  while (from <= header.length) {
    let comma = header.indexOf(",", from);
    if (comma === -1) comma = header.length;
    const spec = trimOws(header.slice(from, comma));
    from = comma + 1;
    // RFC 9110 §5.6.1: a recipient accepts and ignores empty list elements.
    if (spec === "") continue;
    if (++specs > MAX_RANGE_SPECS) return NONE;
    const dash = spec.indexOf("-");
    if (dash === -1) return NONE;
    if (dash === 0) {
      // suffix-range = "-" suffix-length
      const length = parseDigits(spec.slice(1));
      if (Number.isNaN(length)) return NONE;
      if (length > 0 && size > 0) ranges.push({ start: Math.max(0, size - length), end: size - 1 });
      continue;
    }
    // int-range = first-pos "-" [ last-pos ]
    const first = parseDigits(spec.slice(0, dash));
    const last = dash === spec.length - 1 ? Infinity : parseDigits(spec.slice(dash + 1));
    if (Number.isNaN(first) || Number.isNaN(last) || last < first) return NONE;
    if (first < size) ranges.push({ start: first, end: Math.min(last, size - 1) });
  }
  if (specs === 0) return NONE;
  return ranges.length === 0 ? UNSATISFIABLE : { kind: "ranges", ranges };
}

/** Gap below which two ranges are sent as one: roughly what a part's own header costs. */
const MULTIPART_GAP = 80;

/**
 * Sorts ranges and merges those that overlap or lie closer than the cost of a multipart part
 * header, as RFC 9110 §14.6 allows ("a server MAY coalesce any of the ranges that overlap, or
 * that are separated by a gap that is smaller than the overhead of sending multiple parts,
 * regardless of the order"). Bounds the response: never more bytes than the file plus part heads.
 */
function coalesceRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const merged: ByteRange[] = [{ ...sorted[0] }];
  for (let i = 1; i < sorted.length; i++) {
    const last = merged[merged.length - 1];
    const range = sorted[i];
    if (range.start <= last.end + 1 + MULTIPART_GAP) last.end = Math.max(last.end, range.end);
    else merged.push({ ...range });
  }
  return merged;
}

const IMF_FIXDATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/;
const RFC850_DATE =
  /^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-([A-Z][a-z]{2})-(\d\d) (\d\d):(\d\d):(\d\d) GMT$/;
const ASCTIME_DATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ( \d|\d\d) (\d\d):(\d\d):(\d\d) (\d{4})$/;

/**
 * Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three formats: IMF-fixdate
 * (`Sun, 06 Nov 1994 08:49:37 GMT`), which senders must use, and the obsolete RFC 850
 * (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) formats, which
 * recipients must still accept. Nothing else is a date: no time zones but GMT, no extra spaces.
 * The day of the week is not checked against the date.
 *
 * @param value The field value.
 * @returns Milliseconds since the epoch, or null when it is not an HTTP-date.
 *
 * @example
 * ```ts
 * import { parseHttpDate } from "jsr:@wireserve/wireserve";
 * parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"); // 784111777000
 * parseHttpDate("yesterday"); // null
 * ```
 */
export function parseHttpDate(value: string): number | null {
  let day: string, month: string, year: number, hour: string, minute: string, second: string;
  let match = IMF_FIXDATE.exec(value);
  if (match !== null) {
    [, day, month, , hour, minute, second] = match;
    year = Number(match[3]);
  } else if ((match = RFC850_DATE.exec(value)) !== null) {
    [, day, month, , hour, minute, second] = match;
    // "MUST interpret a timestamp that appears to be more than 50 years in the future as
    // representing the most recent year in the past that had the same last two digits."
    const now = new Date().getUTCFullYear();
    year = Math.floor(now / 100) * 100 + Number(match[3]);
    if (year > now + 50) year -= 100;
  } else if ((match = ASCTIME_DATE.exec(value)) !== null) {
    [, month, day, hour, minute, second] = match;
    year = Number(match[6]);
  } else {
    return null;
  }
  const monthIndex = MONTHS.indexOf(month);
  const date = Number(trimOws(day)); // asctime pads a one-digit day with SP
  const h = Number(hour), m = Number(minute), s = Number(second);
  if (monthIndex === -1 || date < 1 || h > 23 || m > 59 || s > 60) return null;
  const time = Date.UTC(year, monthIndex, date, h, m, Math.min(s, 59));
  // Date.UTC rolls 31 Feb over into March; a real date does not change on the way back.
  return new Date(time).getUTCDate() === date ? time : null;
}

/** Formats a time as an IMF-fixdate, whole seconds. */
function formatHttpDate(milliseconds: number): string {
  return new Date(Math.floor(milliseconds / 1000) * 1000).toUTCString();
}

/**
 * Parses an entity-tag list (`If-Match`, `If-None-Match`): `*`, or tags such as `"xyzzy"` and
 * `W/"xyzzy"` separated by commas (RFC 9110 §8.8.3). Null when the value is malformed.
 */
function parseEntityTags(value: string): "*" | string[] | null {
  const text = trimOws(value);
  if (text === "*") return "*";
  const tags: string[] = [];
  let i = 0;
  while (i < text.length) {
    const code = text.charCodeAt(i);
    if (isOws(code) || code === 0x2c) {
      i++;
      continue;
    }
    const start = i;
    if (text.startsWith("W/", i)) i += 2;
    if (text.charCodeAt(i) !== 0x22) return null;
    const close = text.indexOf('"', i + 1);
    if (close === -1) return null;
    for (let j = i + 1; j < close; j++) {
      // etagc = %x21 / %x23-7E / obs-text
      const c = text.charCodeAt(j);
      if (c < 0x21 || c === 0x7f || c > 0xff) return null;
    }
    tags.push(text.slice(start, close + 1));
    i = close + 1;
    // After a tag: only OWS, then a comma or the end.
    while (i < text.length && isOws(text.charCodeAt(i))) i++;
    if (i < text.length && text.charCodeAt(i) !== 0x2c) return null;
  }
  return tags.length === 0 ? null : tags;
}

/** RFC 9110 §8.8.3.2 strong comparison: both strong and the same. */
function strongMatch(a: string, b: string): boolean {
  return !a.startsWith("W/") && a === b;
}

/** RFC 9110 §8.8.3.2 weak comparison: the same opaque tag, weak or not. */
function weakMatch(a: string, b: string): boolean {
  return (a.startsWith("W/") ? a.slice(2) : a) === (b.startsWith("W/") ? b.slice(2) : b);
}

/** Whole seconds: HTTP dates have no finer resolution, so comparisons round down first. */
function toSeconds(milliseconds: number): number {
  return Math.floor(milliseconds / 1000);
}

/**
 * Evaluates the conditional request headers in the order RFC 9110 §13.2.2 gives:
 *
 * 1. `If-Match` present: false → 412. It uses the strong comparison, so a weak ETag never matches
 *    a list, only `*` does.
 * 2. Otherwise `If-Unmodified-Since` present (and a valid date, and a last modification time
 *    known): modified since → 412.
 * 3. `If-None-Match` present: a tag matches (weak comparison) or `*` → 304 for GET and HEAD, 412
 *    for other methods.
 * 4. Otherwise, for GET and HEAD, `If-Modified-Since` (a valid date): not modified since → 304.
 *
 * `If-Range` is step 5 and belongs to the range logic: see {@linkcode evaluateIfRange}. A
 * malformed entity-tag list matches nothing; a malformed date is ignored (§13.1.3, §13.1.4).
 *
 * @param headers The request headers.
 * @param validators The representation's current `ETag` and modification time.
 * @param method The request method.
 * @returns 200 to go on and answer the request, 304 or 412 to answer that instead.
 *
 * @example
 * ```ts
 * import { evaluatePreconditions } from "jsr:@wireserve/wireserve";
 * const headers = new Headers({ "if-none-match": 'W/"1f-18c"' });
 * evaluatePreconditions(headers, { etag: 'W/"1f-18c"' }, "GET"); // 304
 * evaluatePreconditions(headers, { etag: 'W/"1f-18c"' }, "PUT"); // 412
 * ```
 */
export function evaluatePreconditions(
  headers: Headers,
  validators: Validators,
  method: string,
): 200 | 304 | 412 {
  const etag = validators.etag ?? null;
  const lastModified = validators.lastModified ?? null;
  const ifMatch = headers.get("if-match");
  if (ifMatch !== null) {
    const tags = parseEntityTags(ifMatch);
    // "*": true if the origin server has a current representation; we are asked about one.
    const matched = tags === "*" || (tags !== null && etag !== null &&
      tags.some((tag) => strongMatch(tag, etag)));
    if (!matched) return 412;
  } else {
    const ifUnmodifiedSince = headers.get("if-unmodified-since");
    if (ifUnmodifiedSince !== null && lastModified !== null) {
      const date = parseHttpDate(ifUnmodifiedSince);
      if (date !== null && toSeconds(lastModified) > toSeconds(date)) return 412;
    }
  }
  const safe = method === "GET" || method === "HEAD";
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    const tags = parseEntityTags(ifNoneMatch);
    const matched = tags === "*" || (tags !== null && etag !== null &&
      tags.some((tag) => weakMatch(tag, etag)));
    if (matched) return safe ? 304 : 412;
  } else if (safe) {
    const ifModifiedSince = headers.get("if-modified-since");
    if (ifModifiedSince !== null && lastModified !== null) {
      const date = parseHttpDate(ifModifiedSince);
      if (date !== null && toSeconds(lastModified) <= toSeconds(date)) return 304;
    }
  }
  return 200;
}

/**
 * Evaluates `If-Range` (RFC 9110 §13.1.5): whether the client's copy is still current, so that
 * the ranges it asks for may be sent. An entity-tag must match strongly, so a weak ETag never
 * does (the static file server's are strong); an HTTP-date must equal the last modification time
 * exactly. Anything else, malformed values included, is false: send the whole representation.
 *
 * @param value The `If-Range` value.
 * @param validators The representation's current `ETag` and modification time.
 * @returns Whether to honour `Range`.
 *
 * @example
 * ```ts
 * import { evaluateIfRange } from "jsr:@wireserve/wireserve";
 * evaluateIfRange("Sun, 06 Nov 1994 08:49:37 GMT", { lastModified: 784111777000 }); // true
 * evaluateIfRange('W/"a"', { etag: 'W/"a"' }); // false: weak tags never match strongly
 * ```
 */
export function evaluateIfRange(value: string, validators: Validators): boolean {
  const text = trimOws(value);
  // "A valid entity-tag can be distinguished from a valid HTTP-date by examining the first three
  // characters for a DQUOTE."
  if (text.charCodeAt(0) === 0x22 || text.startsWith("W/")) {
    const etag = validators.etag ?? null;
    return etag !== null && strongMatch(text, etag);
  }
  const date = parseHttpDate(text);
  const lastModified = validators.lastModified ?? null;
  return date !== null && lastModified !== null && toSeconds(lastModified) === toSeconds(date);
}

/**
 * Chooses a content coding from `available` for an `Accept-Encoding` value (RFC 9110 §12.5.3):
 * the available coding with the highest q-value above 0, ties going to the order of `available`;
 * `*` stands for every coding not named; `x-gzip` is `gzip` (§8.4.1.3). A coding is chosen only
 * if it is at least as acceptable as `identity` when the header weighs `identity` (by name or
 * through `*`), and only when the header is present: a client that sends none gets no coding
 * (§12.5.3 makes any coding acceptable then, but does not make one preferable). Elements with a
 * malformed q-value are skipped.
 *
 * @param acceptEncoding The `Accept-Encoding` value, or null when absent.
 * @param available Codings on offer, most preferred first, e.g. `["br", "gzip"]`.
 * @returns The chosen coding, or null for none (identity).
 *
 * @example
 * ```ts
 * import { negotiateEncoding } from "jsr:@wireserve/wireserve";
 * negotiateEncoding("gzip, deflate, br", ["br", "gzip"]); // "br"
 * negotiateEncoding("br;q=0.5, gzip", ["br", "gzip"]); // "gzip"
 * negotiateEncoding("br;q=0", ["br"]); // null
 * ```
 */
export function negotiateEncoding(
  acceptEncoding: string | null,
  available: readonly string[],
): string | null {
  if (acceptEncoding === null) return null;
  const weights = new Map<string, number>();
  for (const element of acceptEncoding.split(",")) {
    const semicolon = element.indexOf(";");
    const name = trimOws(semicolon === -1 ? element : element.slice(0, semicolon)).toLowerCase();
    if (name === "") continue;
    let q = 1;
    if (semicolon !== -1) {
      // weight = OWS ";" OWS "q=" qvalue; qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
      const match = /^q=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/i.exec(
        trimOws(element.slice(semicolon + 1)),
      );
      if (match === null) continue;
      q = Number(match[1]);
    }
    const coding = name === "x-gzip" ? "gzip" : name;
    if (!weights.has(coding)) weights.set(coding, q);
  }
  const any = weights.get("*");
  // Identity competes only when the header weighs it (itself or through "*"): a client that
  // lists "gzip;q=0.5" alone still wants gzip rather than nothing.
  const identity = weights.get("identity") ?? any ?? 0;
  let best: string | null = null;
  let bestQ = 0;
  for (const coding of available) {
    const q = weights.get(coding.toLowerCase()) ?? any ?? 0;
    if (q > bestQ) {
      best = coding;
      bestQ = q;
    }
  }
  return best !== null && bestQ >= identity ? best : null;
}

/**
 * `Content-Type` by file extension: the common web, media, font and document types. Text types
 * carry `charset=utf-8`: files are assumed to be UTF-8, as web sources overwhelmingly are.
 */
const CONTENT_TYPES: ReadonlyMap<string, string> = new Map([
  // Web text
  ["html", "text/html; charset=utf-8"],
  ["htm", "text/html; charset=utf-8"],
  ["xhtml", "application/xhtml+xml; charset=utf-8"],
  ["css", "text/css; charset=utf-8"],
  // RFC 9239: text/javascript is the one type for JavaScript.
  ["js", "text/javascript; charset=utf-8"],
  ["mjs", "text/javascript; charset=utf-8"],
  ["cjs", "text/javascript; charset=utf-8"],
  ["json", "application/json; charset=utf-8"],
  ["map", "application/json; charset=utf-8"],
  ["jsonld", "application/ld+json; charset=utf-8"],
  ["webmanifest", "application/manifest+json; charset=utf-8"],
  ["txt", "text/plain; charset=utf-8"],
  ["text", "text/plain; charset=utf-8"],
  ["log", "text/plain; charset=utf-8"],
  ["md", "text/markdown; charset=utf-8"],
  ["markdown", "text/markdown; charset=utf-8"],
  ["csv", "text/csv; charset=utf-8"],
  ["tsv", "text/tab-separated-values; charset=utf-8"],
  ["ics", "text/calendar; charset=utf-8"],
  ["vtt", "text/vtt; charset=utf-8"],
  ["srt", "application/x-subrip; charset=utf-8"],
  ["xml", "application/xml"],
  ["xsl", "application/xml"],
  ["rss", "application/rss+xml"],
  ["atom", "application/atom+xml"],
  ["yaml", "application/yaml; charset=utf-8"],
  ["yml", "application/yaml; charset=utf-8"],
  ["toml", "application/toml; charset=utf-8"],
  ["wasm", "application/wasm"],
  // Images
  ["png", "image/png"],
  ["apng", "image/apng"],
  ["jpg", "image/jpeg"],
  ["jpeg", "image/jpeg"],
  ["jfif", "image/jpeg"],
  ["gif", "image/gif"],
  ["webp", "image/webp"],
  ["avif", "image/avif"],
  ["jxl", "image/jxl"],
  ["heic", "image/heic"],
  ["svg", "image/svg+xml"],
  ["svgz", "image/svg+xml"],
  ["ico", "image/vnd.microsoft.icon"],
  ["bmp", "image/bmp"],
  ["tif", "image/tiff"],
  ["tiff", "image/tiff"],
  // Fonts
  ["woff", "font/woff"],
  ["woff2", "font/woff2"],
  ["ttf", "font/ttf"],
  ["otf", "font/otf"],
  ["eot", "application/vnd.ms-fontobject"],
  // Audio and video
  ["mp3", "audio/mpeg"],
  ["m4a", "audio/mp4"],
  ["aac", "audio/aac"],
  ["oga", "audio/ogg"],
  ["ogg", "audio/ogg"],
  ["opus", "audio/ogg"],
  ["wav", "audio/wav"],
  ["flac", "audio/flac"],
  ["weba", "audio/webm"],
  ["mid", "audio/midi"],
  ["midi", "audio/midi"],
  ["mp4", "video/mp4"],
  ["m4v", "video/mp4"],
  ["ogv", "video/ogg"],
  ["webm", "video/webm"],
  ["mov", "video/quicktime"],
  ["mkv", "video/x-matroska"],
  ["avi", "video/x-msvideo"],
  // As nginx: .ts is an MPEG transport stream (HLS segments), not TypeScript.
  ["ts", "video/mp2t"],
  ["m3u8", "application/vnd.apple.mpegurl"],
  ["mpd", "application/dash+xml"],
  // Documents and archives
  ["pdf", "application/pdf"],
  ["epub", "application/epub+zip"],
  ["rtf", "application/rtf"],
  ["doc", "application/msword"],
  ["docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
  ["xls", "application/vnd.ms-excel"],
  ["xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"],
  ["ppt", "application/vnd.ms-powerpoint"],
  ["pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"],
  ["odt", "application/vnd.oasis.opendocument.text"],
  ["ods", "application/vnd.oasis.opendocument.spreadsheet"],
  ["odp", "application/vnd.oasis.opendocument.presentation"],
  ["zip", "application/zip"],
  ["gz", "application/gzip"],
  ["tgz", "application/gzip"],
  ["tar", "application/x-tar"],
  ["bz2", "application/x-bzip2"],
  ["xz", "application/x-xz"],
  ["zst", "application/zstd"],
  ["7z", "application/x-7z-compressed"],
  ["rar", "application/vnd.rar"],
]);

/** The type of a file whose extension is not in the table: bytes, to be downloaded, not sniffed. */
const DEFAULT_CONTENT_TYPE = "application/octet-stream";

/**
 * The `Content-Type` for a file name, from its extension (case-insensitive); text types carry
 * `charset=utf-8`. A name with no extension, or only a leading dot (`.env`), is
 * `application/octet-stream`.
 *
 * @param path A file name or path; only the part after the last `/` or `\` counts.
 * @returns The media type, with its charset for text.
 *
 * @example
 * ```ts
 * import { contentTypeFor } from "jsr:@wireserve/wireserve";
 * contentTypeFor("site/index.HTML"); // "text/html; charset=utf-8"
 * contentTypeFor("photo.jpg"); // "image/jpeg"
 * contentTypeFor("README"); // "application/octet-stream"
 * ```
 */
export function contentTypeFor(path: string): string {
  const name = path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return DEFAULT_CONTENT_TYPE;
  return CONTENT_TYPES.get(name.slice(dot + 1).toLowerCase()) ?? DEFAULT_CONTENT_TYPE;
}

/** A request path as file-name segments: the result of {@linkcode decodeRequestPath}. */
export interface DecodedPath {
  /** Decoded segments, empty ones (from `//`) dropped: `/a/b%20c/` gives `["a", "b c"]`. */
  segments: string[];
  /** Whether the path ends in `/`, as a directory URL does. */
  trailingSlash: boolean;
}

/**
 * Turns a URL path into file-name segments, refusing anything that could name a file other than
 * the one the segments spell out below a root. The path is percent-decoded exactly once, segment by
 * segment, and the result is refused (null, answered 400) when:
 *
 * - it does not start with `/`, or a segment has a malformed escape or one that is not UTF-8;
 * - a decoded segment is `.` or `..` (`%2e%2e`): URL parsers resolve literal dot segments already,
 *   so an encoded one is an attempt to climb;
 * - a decoded segment contains `/` or `\` (`%2f`, `%5c`): it would be split again by the file
 *   system, and `\` is a separator on Windows;
 * - a decoded segment contains NUL (`%00`), which ends a path in the C APIs below every runtime.
 *
 * Empty segments are dropped, as nginx merges slashes: `//etc/passwd` is `etc/passwd` below the
 * root. Dotfiles are not refused here; that is a policy of {@linkcode serveDir}.
 *
 * @param pathname The URL path, percent-encoded, as in `new URL(request.url).pathname`.
 * @returns The segments, or null when the path must be refused.
 *
 * @example
 * ```ts
 * import { decodeRequestPath } from "jsr:@wireserve/wireserve";
 * decodeRequestPath("/docs/a%20b.txt"); // { segments: ["docs", "a b.txt"], trailingSlash: false }
 * decodeRequestPath("/..%2fetc/passwd"); // null
 * ```
 */
export function decodeRequestPath(pathname: string): DecodedPath | null {
  if (pathname.charCodeAt(0) !== 0x2f || pathname.includes("\\")) return null;
  const segments: string[] = [];
  let from = 1;
  while (from < pathname.length) {
    let slash = pathname.indexOf("/", from);
    if (slash === -1) slash = pathname.length;
    const raw = pathname.slice(from, slash);
    from = slash + 1;
    if (raw === "") continue;
    let segment = raw;
    if (raw.includes("%")) {
      try {
        segment = decodeURIComponent(raw);
      } catch {
        return null;
      }
      if (segment.includes("/") || segment.includes("\\")) return null;
    }
    if (segment === "." || segment === ".." || segment.includes("\0")) return null;
    segments.push(segment);
  }
  return { segments, trailingSlash: pathname.charCodeAt(pathname.length - 1) === 0x2f };
}

//#endregion
//#region Static files

// The file server: serveFile and serveDir, built from the HTTP semantics above over one small file
// adapter per runtime, so that each uses its own fast path. The few runtime APIs used are declared
// structurally, as the transport adapters' are.

/** What the static file server needs to know about a file. */
interface FileStat {
  isFile: boolean;
  isDirectory: boolean;
  size: number;
  /** Milliseconds since the epoch; null where the platform does not know. */
  mtime: number | null;
}

/** An open file, or (on Bun) a file about to be opened, with the stat taken when it was opened. */
interface OpenFile {
  readonly stat: FileStat;
  /** The whole file, when a {@linkcode FileCache} holds it: sent as it is, never copied. */
  readonly held?: HeldContents;
  /** Its `ETag`, when a {@linkcode FileCache} made it already. */
  readonly etag?: string;
  /** Its `Last-Modified`, when a {@linkcode FileCache} formatted it already. */
  readonly lastModified?: string;
  /** Bytes `start` to `end - 1` in one array, for small reads. */
  bytes(start: number, end: number): Promise<Uint8Array<ArrayBuffer>>;
  /** Bytes `start` to `end - 1` as a stream that reads only when pulled, so backpressure holds. */
  stream(start: number, end: number): ReadableStream<Uint8Array>;
  /** Closes the file; safe to call twice. */
  close(): void;
}

/** The file system operations of the static file server. */
interface FileAdapter {
  /** Opens a file (or directory) for reading, following symlinks. */
  open(path: string): Promise<OpenFile>;
  /** Stats a path, following symlinks. */
  stat(path: string): Promise<FileStat>;
  /** The canonical absolute path, every symlink resolved. */
  realPath(path: string): Promise<string>;
  /** The names in a directory. */
  readDir(path: string): Promise<string[]>;
}

interface DenoFileInfo {
  isFile: boolean;
  isDirectory: boolean;
  size: number;
  mtime: Date | null;
}
interface DenoFsFile {
  stat(): Promise<DenoFileInfo>;
  read(buffer: Uint8Array): Promise<number | null>;
  seek(offset: number, whence: 0): Promise<number>;
  close(): void;
}
interface DenoFiles {
  open(path: string, options: { read: true }): Promise<DenoFsFile>;
  stat(path: string): Promise<DenoFileInfo>;
  realPath(path: string): Promise<string>;
  readDir(path: string): AsyncIterable<{ name: string }>;
}
interface BunFileBlob {
  slice(start: number, end: number): BunFileBlob;
  stream(): ReadableStream<Uint8Array>;
  arrayBuffer(): Promise<ArrayBuffer>;
}
interface BunFiles {
  file(path: string): BunFileBlob;
}

/** The runtime globals, typed as far as the file adapters use them. */
const FILE_RUNTIME = RUNTIME as unknown as { Deno?: DenoFiles; Bun?: BunFiles };

/**
 * Bytes read from a file per chunk of a streamed body, the most a streamed file holds in memory
 * per response. Deno's and Node's file reads each cross to a thread of the runtime: a 1 MiB file
 * in 256 KiB reads cost 15 % (Deno) and 37 % (Node) less server CPU than in 64 KiB ones
 * (bench/NOTES.md).
 */
const FILE_CHUNK_BYTES = 256 * 1024;

/** Files up to this size are read in one go, so the server can send head and body in one write. */
const SMALL_FILE_BYTES = 64 * 1024;

/**
 * Reads from a file at `position` into `buffer`, without moving a shared cursor; resolves with the
 * number of bytes read, 0 at the end of the file.
 */
type PositionalRead = (buffer: Uint8Array, position: number) => Promise<number>;

/** The error of a read that ends early: the file was truncated after its size was taken. */
function fileShrankError(): Error {
  return new Error("Cannot read file: it is shorter than when it was opened");
}

/**
 * A stream over a positional reader: each pull reads one chunk into a new buffer (never a reused
 * one, since the previous chunk may still be queued for the socket), and nothing is read until
 * the consumer asks, so a slow client holds the file where it is.
 */
function positionalStream(
  read: PositionalRead,
  start: number,
  end: number,
): ReadableStream<Uint8Array> {
  let position = start;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const length = Math.min(FILE_CHUNK_BYTES, end - position);
      if (length <= 0) {
        controller.close();
        return;
      }
      const buffer = new Uint8Array(length);
      const count = await read(buffer, position);
      if (count === 0) {
        controller.error(fileShrankError());
        return;
      }
      position += count;
      controller.enqueue(count === length ? buffer : buffer.subarray(0, count));
      if (position >= end) controller.close();
    },
  }, { highWaterMark: 0 });
}

/** Reads `end - start` bytes into one array through a positional reader. */
async function readFully(
  read: PositionalRead,
  start: number,
  end: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const buffer = new Uint8Array(end - start);
  let filled = 0;
  while (filled < buffer.length) {
    const count = await read(buffer.subarray(filled), start + filled);
    if (count === 0) throw fileShrankError();
    filled += count;
  }
  return buffer;
}

/**
 * The {@linkcode OpenFile} of a handle that reads at a position (Node's `FileHandle`, Deno's
 * `FsFile`): the adapters differ only in how they stat, read and close it. The stat is taken once,
 * now, so that size, ETag and ranges agree for the whole response; a failed stat closes the
 * handle. `close` runs at most once, however often the server calls it.
 */
async function positionalFile(
  stat: () => Promise<FileStat>,
  read: PositionalRead,
  close: () => void,
): Promise<OpenFile> {
  let fileStat: FileStat;
  try {
    fileStat = await stat();
  } catch (error) {
    close();
    throw error;
  }
  let closed = false;
  return {
    stat: fileStat,
    bytes: (start, end) => readFully(read, start, end),
    stream: (start, end) => positionalStream(read, start, end),
    close() {
      if (closed) return;
      closed = true;
      close();
    },
  };
}

function nodeStat(stats: {
  isFile(): boolean;
  isDirectory(): boolean;
  size: number;
  mtimeMs: number;
}): FileStat {
  return {
    isFile: stats.isFile(),
    isDirectory: stats.isDirectory(),
    size: stats.size,
    mtime: Number.isFinite(stats.mtimeMs) ? stats.mtimeMs : null,
  };
}

/** An {@linkcode OpenFile} for a directory, which has no bytes to read. */
function directoryFile(stat: FileStat): OpenFile {
  const fail = () => {
    throw new TypeError("Cannot read a directory as a file");
  };
  return { stat, bytes: fail, stream: fail, close() {} };
}

/** Node: `node:fs/promises`, with positional reads on one `FileHandle`. */
const NODE_FILES: FileAdapter = {
  async open(path) {
    let handle: nodeFs.FileHandle;
    try {
      handle = await nodeFs.open(path, "r");
    } catch (error) {
      // Windows cannot open a directory as a file; the caller only needs to learn that it is one.
      if ((error as { code?: unknown }).code !== "EISDIR") throw error;
      return directoryFile(nodeStat(await nodeFs.stat(path)));
    }
    return positionalFile(
      async () => nodeStat(await handle.stat()),
      async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead,
      () => handle.close().catch(() => {}),
    );
  },
  stat: async (path) => nodeStat(await nodeFs.stat(path)),
  realPath: (path) => nodeFs.realpath(path),
  readDir: (path) => nodeFs.readdir(path),
};

/** Bun: `Bun.file` streams and reads (lazily, natively); `node:fs` for the rest. */
const BUN_FILES: FileAdapter = {
  async open(path) {
    const bun = FILE_RUNTIME.Bun as BunFiles;
    const stat = nodeStat(await nodeFs.stat(path));
    const file = bun.file(path);
    return {
      stat,
      bytes: async (start, end) => {
        const bytes = new Uint8Array(await file.slice(start, end).arrayBuffer());
        if (bytes.length !== end - start) throw fileShrankError();
        return bytes;
      },
      stream: (start, end) => file.slice(start, end).stream(),
      close() {},
    };
  },
  stat: NODE_FILES.stat,
  realPath: NODE_FILES.realPath,
  readDir: NODE_FILES.readDir,
};

function denoStat(info: DenoFileInfo): FileStat {
  return {
    isFile: info.isFile,
    isDirectory: info.isDirectory,
    size: info.size,
    mtime: info.mtime === null ? null : info.mtime.getTime(),
  };
}

/** Deno: `Deno.open` and friends; reads seek only when not already at the position. */
const DENO_FILES: FileAdapter = {
  async open(path) {
    const deno = FILE_RUNTIME.Deno as DenoFiles;
    const file = await deno.open(path, { read: true });
    // Deno reads at the file's cursor: a positional read seeks first, unless the last read left
    // the cursor where this one starts, as each read of a stream does for the next.
    let cursor = 0;
    return positionalFile(
      async () => denoStat(await file.stat()),
      async (buffer, position) => {
        if (position !== cursor) cursor = await file.seek(position, 0);
        const count = (await file.read(buffer)) ?? 0;
        cursor += count;
        return count;
      },
      () => {
        try {
          file.close();
        } catch { /* closed by the runtime already */ }
      },
    );
  },
  stat: async (path) => denoStat(await (FILE_RUNTIME.Deno as DenoFiles).stat(path)),
  realPath: (path) => (FILE_RUNTIME.Deno as DenoFiles).realPath(path),
  async readDir(path) {
    const names: string[] = [];
    for await (const entry of (FILE_RUNTIME.Deno as DenoFiles).readDir(path)) {
      names.push(entry.name);
    }
    return names;
  },
};

/** The file adapter of each runtime, chosen as the transport adapter is. */
const FILES: FileAdapter =
  { bun: BUN_FILES, deno: DENO_FILES, node: NODE_FILES }[RUNTIME_PROFILE.name];

/** The error code of a failed file operation, across runtimes (Node's `code`, Deno's too). */
function fileErrorStatus(error: unknown): number {
  const code = (error as { code?: unknown } | null)?.code;
  const name = (error as { name?: unknown } | null)?.name;
  if (code === "EACCES" || code === "EPERM" || name === "PermissionDenied") return 403;
  if (
    code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP" || code === "ENAMETOOLONG" ||
    code === "EISDIR" || code === "EINVAL" || name === "NotFound" || name === "NotADirectory"
  ) {
    return 404;
  }
  return 500;
}

/** Options for a {@linkcode FileCache}. */
export interface FileCacheOptions {
  /**
   * Files it remembers (a file as a URL names it, with its precompressed siblings); the least
   * recently used is forgotten first (approximately: see {@linkcode FileCache}).
   * @default {1024}
   */
  maxEntries?: number;
  /**
   * Bytes of file contents it holds, over all its files (32 MiB).
   * @default {33554432}
   */
  maxBytes?: number;
  /**
   * Files up to this size have their contents held. Larger ones keep only what was learnt about
   * them (the path they resolve to, their siblings) and are opened and streamed for each response.
   * @default {65536}
   */
  maxFileBytes?: number;
  /**
   * Milliseconds that what it learnt from the file system is trusted before it asks again (nginx's
   * `open_file_cache_valid`): a file changed, added or removed on disk is served as it now is
   * within this time. While one request asks, others are answered as before. With 0 every request
   * asks (contents are still held, and read again only when a file's size or modification time
   * changed).
   * @default {1000}
   */
  validFor?: number;
}

/** The file server's view of a {@linkcode FileCache}; the class's static block hands it out. */
let fileCacheStore: (cache: FileCache) => FileCacheStore;

/**
 * What {@linkcode serveDir} and {@linkcode serveFile} learn about the files they serve, kept in
 * memory between requests so that a hot small file is answered without a system call: the path a
 * URL resolves to (symlinks and all), the file's size, modification time and precompressed
 * siblings, and the contents of files up to `maxFileBytes`, bounded in entries and bytes (least
 * recently used first out, by the CLOCK approximation: a file used since it was last considered
 * gets a second chance), asked of the file system again at most every `validFor` milliseconds.
 *
 * Both use one shared cache with the default options unless given their own, or `cache: false`.
 * Each worker (and each process) has its own.
 *
 * @example A cache of its own, checked every 5 s, holding up to 128 MiB
 * ```ts
 * import { FileCache, serve, serveDir } from "jsr:@wireserve/wireserve";
 * const cache = new FileCache({ validFor: 5000, maxBytes: 128 * 1024 * 1024 });
 * serve({ port: 8080 }, (request) => serveDir(request, { root: "./public", cache }));
 * ```
 */
export class FileCache {
  #store: FileCacheStore;

  static {
    fileCacheStore = (cache) => cache.#store;
  }

  /**
   * Makes an empty cache.
   *
   * @param options Its bounds and how long what it learns is trusted.
   * @throws {RangeError} When a bound is negative or not a number.
   */
  constructor(options: FileCacheOptions = {}) {
    this.#store = new FileCacheStore(
      cacheBound("maxEntries", options.maxEntries, 1024),
      cacheBound("maxBytes", options.maxBytes, 32 * 1024 * 1024),
      cacheBound("maxFileBytes", options.maxFileBytes, SMALL_FILE_BYTES),
      cacheBound("validFor", options.validFor, 1000),
    );
  }

  /**
   * The number of files it remembers.
   *
   * @returns The count.
   */
  get size(): number {
    return this.#store.entries.size;
  }

  /**
   * The bytes of file contents it holds.
   *
   * @returns The sum over its files.
   */
  get byteLength(): number {
    return this.#store.bytes;
  }

  /** Forgets everything: the next request for each file asks the file system. */
  clear(): void {
    this.#store.clear();
  }
}

/** A {@linkcode FileCacheOptions} bound, its default when absent. */
function cacheBound(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 0)) {
    throw new RangeError(`Cannot make a file cache: ${name} is not a number >= 0`);
  }
  return value;
}

/** One file of a cached answer: the file a URL names, or one of its precompressed siblings. */
interface CachedVariant {
  /** Its `Content-Encoding`: null for the original. */
  readonly coding: string | null;
  /** The path to open it at: its canonical path, unless symlinks are followed as they come. */
  readonly target: string;
  readonly stat: FileStat;
  /** Its contents, or null when it is too large to hold and is opened for each response. */
  readonly held: HeldContents | null;
  /** An open file over `held` (it holds nothing else, so one serves every response), or null. */
  readonly memory: OpenFile | null;
  /** Its `ETag` and `Last-Modified`, made once rather than for each response. */
  readonly etag: string;
  readonly lastModified: string | undefined;
}

/** What a {@linkcode FileCache} remembers about the file a URL names. */
interface CachedFile {
  readonly kind: "cached";
  readonly contentType: string;
  /** The original first, then the siblings found, in {@linkcode PRECOMPRESSED} order. */
  readonly variants: readonly CachedVariant[];
  /** The codings of the siblings found, in the same order. */
  readonly codings: readonly string[];
  /** Bytes of contents held, over the variants. */
  readonly bytes: number;
  /** When the file system was asked, by `Date.now()`. */
  readonly checked: number;
  /** Used since it was stored or last given a second chance (see {@linkcode FileCacheStore}). */
  used: boolean;
  /** A request is asking the file system again; others are answered from this entry meanwhile. */
  revalidating: boolean;
}

/**
 * The entries of a {@linkcode FileCache}, oldest first (a `Map` keeps insertion order), forgotten
 * by the CLOCK (second chance) approximation of least recently used: a hit only marks its entry
 * used, and eviction moves a used entry to the end, unmarked, instead of dropping it. Exact LRU
 * would move the entry on every hit, a Map delete and set that cost a measurable share of the
 * lookup (bench/NOTES.md).
 */
class FileCacheStore {
  readonly entries: Map<string, CachedFile> = new Map();
  bytes = 0;
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly maxFileBytes: number;
  readonly validFor: number;

  constructor(maxEntries: number, maxBytes: number, maxFileBytes: number, validFor: number) {
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    this.maxFileBytes = maxFileBytes;
    this.validFor = validFor;
  }

  /**
   * The entry for `key` if it may be trusted at `now`, made the most recently used. When it is too
   * old, the first caller gets undefined and asks the file system (then stores or deletes the
   * entry); until it has, later callers get the old entry.
   */
  get(key: string, now: number): CachedFile | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (now - entry.checked >= this.validFor && !entry.revalidating) {
      entry.revalidating = true;
      return undefined;
    }
    entry.used = true;
    return entry;
  }

  /** Stores an entry as the newest, then forgets the oldest unused ones past the bounds. */
  put(key: string, entry: CachedFile): void {
    this.delete(key);
    this.entries.set(key, entry);
    this.bytes += entry.bytes;
    // A used entry is moved and unmarked, and so is the new one (it has not had its chance yet)
    // while others are left: within two rounds an unused old entry is reached.
    while (this.entries.size > this.maxEntries || this.bytes > this.maxBytes) {
      const [oldest, old] = this.entries.entries().next().value as [string, CachedFile];
      this.entries.delete(oldest);
      if ((old.used || oldest === key) && this.entries.size > 0) {
        old.used = false;
        this.entries.set(oldest, old);
      } else {
        this.bytes -= old.bytes;
      }
    }
  }

  delete(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.bytes -= entry.bytes;
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }
}

/** The cache of every {@linkcode serveDir} and {@linkcode serveFile} call not given one. */
const SHARED_FILE_CACHE = new FileCache();

/** The store `options.cache` names, or null when caching is off. */
function cacheStoreOf(options: ServeFileOptions): FileCacheStore | null {
  const cache = options.cache ?? SHARED_FILE_CACHE;
  if (cache === false) return null;
  if (!(cache instanceof FileCache)) {
    throw new TypeError("Cannot serve files: options.cache is not a FileCache or false");
  }
  return fileCacheStore(cache);
}

/** Options for {@linkcode serveFile}. */
export interface ServeFileOptions {
  /**
   * Serve `<file>.br` or `<file>.gz`, when one exists and `Accept-Encoding` prefers it, with
   * `Content-Encoding` and the original's `Content-Type`. Responses then carry
   * `Vary: Accept-Encoding` whether or not a sibling exists, since caches must key on it either way.
   * The original must exist: a lone `.gz` is not served in its place.
   * @default {true}
   */
  precompressed?: boolean;
  /**
   * Add `Access-Control-Allow-Origin: *` (and expose the range and validator headers), so pages on
   * other origins may read the files.
   * @default {false}
   */
  cors?: boolean;
  /**
   * Where what is learnt about files is kept between requests, so that a hot file is answered from
   * memory: a {@linkcode FileCache}, or false to ask the file system for every request. Without it,
   * a cache shared by every call without one, with the default options: a file changed on disk is
   * served as it now is within a second.
   */
  cache?: FileCache | false;
}

/** Options for {@linkcode serveDir}. */
export interface ServeDirOptions extends ServeFileOptions {
  /** The directory to serve. Nothing outside it is ever served. */
  root: string;
  /**
   * A URL path prefix to strip before mapping the path to a file, e.g. `/static` when the router
   * sends `/static/*` here. It is compared with the path as it is in the URL (percent-encoded);
   * paths outside it are 404.
   * @default {""}
   */
  urlPrefix?: string;
  /**
   * Answer a directory without an index file with an HTML listing; when false, 404.
   * @default {true}
   */
  listing?: boolean;
  /**
   * Serve files and directories whose name, or any of whose parents' names, starts with `.`
   * (`.env`, `.git/config`); when false they are 404 and hidden from listings.
   * @default {false}
   */
  dotfiles?: boolean;
  /**
   * Follow symbolic links that lead outside `root`. Links that stay inside it are always followed:
   * the check is on the canonical path (every link resolved) of what would be served.
   * @default {false}
   */
  followSymlinks?: boolean;
  /**
   * The file served for a directory URL; false for none.
   * @default {"index.html"}
   */
  index?: string | false;
  /**
   * A file under `root` (a single-page app's `"index.html"`) served, with status 200, for a
   * request that matches no file, so that the app's own router can answer a URL such as
   * `/users/42`. Only for a GET or HEAD whose `Accept` names `text/html` (a browser navigating,
   * not a script fetching data), and never for a path whose last segment has a dot (`/app.js`, a
   * missing asset stays 404) or that has a segment starting with one. Off by default.
   */
  fallback?: string;
}

/** Codings of precompressed siblings, most preferred first, and their file suffixes. */
const PRECOMPRESSED: ReadonlyArray<readonly [coding: string, suffix: string]> = [
  ["br", ".br"],
  ["gzip", ".gz"],
];
const PRECOMPRESSED_CODINGS = PRECOMPRESSED.map(([coding]) => coding);

/** Headers on every response of the static file server (CORS is added by {@linkcode withCors}). */
function baseHeaders(): Headers {
  return new Headers({ "x-content-type-options": "nosniff" });
}

/**
 * Adds the CORS headers to a response of the file server. The entry points call it once, on
 * whatever they answer: errors and redirects too, so that a page on another origin can read why a
 * request failed, and the code that builds responses need not know about CORS.
 */
function withCors(response: Response): Response {
  response.headers.set("access-control-allow-origin", "*");
  response.headers.set(
    "access-control-expose-headers",
    "accept-ranges, content-encoding, content-range, etag, last-modified",
  );
  return response;
}

/** A short plain-text error of the static file server: never a path, never request bytes. */
function fileErrorResponse(status: number, extra?: Record<string, string>): Response {
  const headers = baseHeaders();
  headers.set("content-type", "text/plain; charset=utf-8");
  if (extra !== undefined) { for (const name in extra) headers.set(name, extra[name]); }
  return new FastResponse(statusBody(status), { status, headers });
}

/**
 * The answer to a method other than GET and HEAD: 405, or with CORS on, a preflight's 204 (and
 * OPTIONS in `Allow`). The one place besides {@linkcode withCors} that CORS changes.
 */
function methodResponse(request: Request, cors: boolean): Response {
  if (cors && request.method === "OPTIONS") {
    const headers = baseHeaders();
    headers.set("allow", "GET, HEAD, OPTIONS");
    headers.set("access-control-allow-methods", "GET, HEAD");
    headers.set("access-control-allow-headers", "*");
    return new Response(null, { status: 204, headers });
  }
  return fileErrorResponse(405, { allow: cors ? "GET, HEAD, OPTIONS" : "GET, HEAD" });
}

/**
 * A strong ETag from size and modification time (to the millisecond), as nginx makes them. Strong,
 * because `If-Range` compares strongly (RFC 9110 §13.1.5): with a weak tag a browser could never
 * resume a download or fetch the part of a video it seeks to. The price is the usual one: a file
 * rewritten with the same size within the same millisecond keeps its tag.
 */
function fileEtag(stat: FileStat, coding: string | null): string {
  const time = stat.mtime === null ? "" : `-${Math.floor(stat.mtime).toString(16)}`;
  return `"${stat.size.toString(16)}${time}${coding === null ? "" : `-${coding}`}"`;
}

/**
 * A body made of byte arrays and file ranges, read one after the other; closes the file when the
 * body ends, fails or is cancelled.
 */
function fileBody(
  file: OpenFile,
  parts: Array<Uint8Array | ByteRange>,
): ReadableStream<Uint8Array> {
  let index = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        while (index < parts.length) {
          if (reader === null) {
            const part = parts[index];
            if (part instanceof Uint8Array) {
              index++;
              controller.enqueue(part);
              return;
            }
            reader = file.stream(part.start, part.end + 1).getReader();
          }
          const result = await reader.read();
          if (!result.done) {
            controller.enqueue(result.value);
            return;
          }
          reader = null;
          index++;
        }
        file.close();
        controller.close();
      } catch (error) {
        file.close();
        controller.error(error);
      }
    },
    cancel(reason) {
      reader?.cancel(reason).catch(() => {});
      file.close();
    },
  }, { highWaterMark: 0 });
}

/** A random multipart boundary: 24 hex digits, which cannot occur by chance in a file. */
function multipartBoundary(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  let text = "";
  for (const byte of bytes) text += byte.toString(16).padStart(2, "0");
  return text;
}

const TEXT_ENCODER = new TextEncoder();

/**
 * Answers a request with an open file: preconditions, ranges, then the bytes. Takes ownership of
 * `file` (closes it, now or when the body ends). `contentType` is the original's even when the
 * file is a precompressed sibling.
 */
function respondWithFile(
  request: Request,
  file: OpenFile,
  contentType: string,
  coding: string | null,
  vary: boolean,
): Response | Promise<Response> {
  const { stat } = file;
  const size = stat.size;
  const etag = file.etag ?? fileEtag(stat, coding);
  const validators: Validators = { etag, lastModified: stat.mtime };
  // One list, given to the Response as its init: building a Headers and setting fields one by one
  // costs about twice as much on every runtime, and the Response copies it anyway.
  const headers: Array<[string, string]> = [["x-content-type-options", "nosniff"], ["etag", etag]];
  if (stat.mtime !== null) {
    headers.push(["last-modified", file.lastModified ?? formatHttpDate(stat.mtime)]);
  }
  if (vary) headers.push(["vary", "Accept-Encoding"]);

  const method = request.method;
  const requestHeaders = request.headers;
  const precondition = evaluatePreconditions(requestHeaders, validators, method);
  if (precondition !== 200) {
    file.close();
    if (precondition === 412) return fileErrorResponse(412);
    // RFC 9110 §15.4.5: a 304 carries the ETag, Vary and the like a 200 would have, no content.
    return new Response(null, { status: 304, headers });
  }
  headers.push(["accept-ranges", "bytes"]);
  if (coding !== null) headers.push(["content-encoding", coding]);

  // RFC 9110 §14.2: Range is defined for GET only; other methods ignore it.
  const rangeHeader = method === "GET" ? requestHeaders.get("range") : null;
  const range = rangeHeader === null
    ? NONE
    : evaluateRange(rangeHeader, requestHeaders.get("if-range"), validators, size);

  if (range.kind === "unsatisfiable") {
    file.close();
    headers.push(["content-range", `bytes */${size}`]);
    headers.push(["content-type", "text/plain; charset=utf-8"]);
    return new FastResponse("416 Range Not Satisfiable\n", { status: 416, headers });
  }
  if (range.kind === "ranges") {
    const ranges = coalesceRanges(range.ranges);
    if (ranges.length === 1) {
      const { start, end } = ranges[0];
      headers.push(["content-type", contentType]);
      headers.push(["content-range", `bytes ${start}-${end}/${size}`]);
      return sendBytes(file, 206, headers, start, end + 1, request);
    }
    // Several ranges: multipart/byteranges (RFC 9110 §14.6), parts in ascending order.
    const boundary = multipartBoundary();
    const parts: Array<Uint8Array | ByteRange> = [];
    let length = 0;
    for (let i = 0; i < ranges.length; i++) {
      const { start, end } = ranges[i];
      const partHead = TEXT_ENCODER.encode(
        `${i === 0 ? "" : "\r\n"}--${boundary}\r\ncontent-type: ${contentType}\r\n` +
          `content-range: bytes ${start}-${end}/${size}\r\n\r\n`,
      );
      parts.push(partHead, ranges[i]);
      length += partHead.length + end - start + 1;
    }
    const tail = TEXT_ENCODER.encode(`\r\n--${boundary}--\r\n`);
    parts.push(tail);
    length += tail.length;
    headers.push(["content-type", `multipart/byteranges; boundary=${boundary}`]);
    headers.push(["content-length", String(length)]);
    return new Response(fileBody(file, parts), { status: 206, headers });
  }
  headers.push(["content-type", contentType]);
  return sendBytes(file, 200, headers, 0, size, request);
}

/** The ranges of a GET to send: those of `Range`, unless `If-Range` says the client's copy is old. */
function evaluateRange(
  rangeHeader: string,
  ifRange: string | null,
  validators: Validators,
  size: number,
): RangeResult {
  return ifRange === null || evaluateIfRange(ifRange, validators)
    ? parseRange(rangeHeader, size)
    : NONE;
}

/** Sends bytes `start` to `end - 1` of a file: from memory, read at once when small, or streamed. */
function sendBytes(
  file: OpenFile,
  status: number,
  headers: Array<[string, string]>,
  start: number,
  end: number,
  request: Request,
): Response | Promise<Response> {
  const method = request.method;
  const length = end - start;
  headers.push(["content-length", String(length)]);
  if (method === "HEAD" || length === 0) {
    file.close();
    return new Response(method === "HEAD" ? null : new Uint8Array(0), { status, headers });
  }
  const sentHere = answeredHere(request);
  const held = file.held;
  if (held !== undefined) {
    if (status === 200 && sentHere && start === 0 && end === held.bytes.length) {
      return pendingFieldsResponse(held, headers);
    }
    return fixedBytesResponse(held.bytes.subarray(start, end), { status, headers }, sentHere);
  }
  if (length <= SMALL_FILE_BYTES) return sendSmallFile(file, status, headers, start, end, sentHere);
  return new Response(fileBody(file, [{ start, end: end - 1 }]), { status, headers });
}

/** {@linkcode sendBytes} for a small file on disk: read whole, then closed. */
async function sendSmallFile(
  file: OpenFile,
  status: number,
  headers: Array<[string, string]>,
  start: number,
  end: number,
  sentHere: boolean,
): Promise<Response> {
  try {
    // The bytes are this response's own: written as they are, not copied or streamed.
    return fixedBytesResponse(await file.bytes(start, end), { status, headers }, sentHere);
  } finally {
    file.close();
  }
}

/**
 * Maps a path to the path to open for it, or to null when it must not be served (it leads outside
 * the root). Throws when the file system cannot tell.
 */
type ResolvePath = (path: string) => Promise<string | null>;

/** Serves a path as it is given, for {@linkcode serveFile}, which has no root to keep to. */
const AS_GIVEN: ResolvePath = (path) => Promise.resolve(path);

/**
 * The regular file at `path` (through `resolve`), open, with the path it was opened at, or null
 * when there is none to serve there: missing, unreadable, not a file, or outside the root. For the
 * files that are tried and skipped when absent, precompressed siblings and index files: their
 * errors are not the request's.
 */
async function openIfFile(
  path: string,
  resolve: ResolvePath,
): Promise<{ file: OpenFile; target: string } | null> {
  try {
    const target = await resolve(path);
    if (target === null) return null;
    const file = await FILES.open(target);
    if (file.stat.isFile) return { file, target };
    file.close();
  } catch { /* nothing to serve there */ }
  return null;
}

/** A regular file found to answer a request with: one a URL names, or a directory's index. */
interface FoundFile {
  readonly kind: "file";
  /** The file, open at `target`. */
  file: OpenFile;
  /** The path it was opened at: the canonical one unless symlinks are followed as they come. */
  target: string;
  /** Its path as the URL spells it: its type and its siblings' names are taken from it. */
  path: string;
  resolve: ResolvePath;
}

/** The file an answer is made from, open: the one found, or the precompressed sibling chosen. */
interface ChosenFile {
  file: OpenFile;
  contentType: string;
  /** The sibling's `Content-Encoding`, or null for the file itself. */
  coding: string | null;
}

/**
 * The file to answer `request` with: `found`, or, when precompressed siblings are on and
 * `Accept-Encoding` prefers one, the sibling instead (found through `found.resolve`). Takes
 * ownership of `found.file`.
 */
async function chooseVariant(
  request: Request,
  found: FoundFile,
  precompressed: boolean,
): Promise<ChosenFile> {
  const contentType = contentTypeFor(found.path);
  if (!precompressed) return { file: found.file, contentType, coding: null };
  const acceptEncoding = request.headers.get("accept-encoding");
  const candidates = [...PRECOMPRESSED_CODINGS];
  while (candidates.length > 0) {
    const coding = negotiateEncoding(acceptEncoding, candidates);
    if (coding === null) break;
    candidates.splice(candidates.indexOf(coding), 1);
    const suffix = PRECOMPRESSED.find(([name]) => name === coding)?.[1] as string;
    // No such sibling: try the next coding, then the original.
    const sibling = await openIfFile(found.path + suffix, found.resolve);
    if (sibling !== null) {
      found.file.close();
      return { file: sibling.file, contentType, coding };
    }
  }
  return { file: found.file, contentType, coding: null };
}

/** Whether a stat shows the same file as before: same size and modification time, both known. */
function sameFileStat(before: FileStat, now: FileStat): boolean {
  return before.mtime !== null && before.mtime === now.mtime && before.size === now.size;
}

/**
 * What a {@linkcode FileCache} keeps of a file found on disk: it and its precompressed siblings
 * (when those are on), with the contents of each small enough to hold, taken over from `previous`
 * when the path, size and modification time are unchanged and read otherwise. `checked` is when
 * the file system was asked. Closes every file it opens, and `found.file`.
 */
async function learnFile(
  store: FileCacheStore,
  found: FoundFile,
  precompressed: boolean,
  previous: CachedFile | undefined,
  checked: number,
): Promise<CachedFile> {
  const opened = [{ coding: null as string | null, file: found.file, target: found.target }];
  try {
    if (precompressed) {
      for (const [coding, suffix] of PRECOMPRESSED) {
        const sibling = await openIfFile(found.path + suffix, found.resolve);
        if (sibling !== null) opened.push({ coding, ...sibling });
      }
    }
    const variants: CachedVariant[] = [];
    let bytes = 0;
    for (const { coding, file, target } of opened) {
      const { stat } = file;
      let contents: Uint8Array<ArrayBuffer> | null = null;
      if (stat.size <= store.maxFileBytes) {
        const known = previous?.variants.find((variant) => variant.coding === coding);
        contents = known !== undefined && known.held !== null && known.target === target &&
            sameFileStat(known.stat, stat)
          ? known.held.bytes
          : await file.bytes(0, stat.size);
        bytes += contents.length;
      }
      const etag = fileEtag(stat, coding);
      const lastModified = stat.mtime === null ? undefined : formatHttpDate(stat.mtime);
      // A new one even for contents unchanged: its fields may not be (a sibling came or went).
      const held = contents === null ? null : new HeldContents(contents);
      variants.push({
        coding,
        target,
        stat,
        held,
        memory: held === null ? null : memoryFile(stat, held, etag, lastModified),
        etag,
        lastModified,
      });
    }
    return {
      kind: "cached",
      contentType: contentTypeFor(found.path),
      variants,
      codings: variants.slice(1).map((variant) => variant.coding as string),
      bytes,
      checked,
      used: false,
      revalidating: false,
    };
  } finally {
    for (const { file } of opened) file.close();
  }
}

/**
 * Contents a {@linkcode FileCache} holds for one file, with what every whole 200 response of them
 * shares: its fields serialized once, and the last such response made whole (head, then contents),
 * written again as it is while its Date holds. Once a response is made whole the contents live in
 * it (`bytes` is a view of its end), so a held file costs its size once, not twice. No array is
 * written after it is made: each second's response is a new one, since a write to a slow client
 * may still hold the last.
 */
class HeldContents {
  bytes: Uint8Array<ArrayBuffer>;
  /**
   * The fields of the 200 response, serialized ({@linkcode serializeFields}) when first made. They
   * are the same for every such response: everything they say (type, tags, coding, Vary) is fixed
   * for the contents held, which a cache entry never changes; new contents get a new HeldContents.
   */
  fields: string | null = null;
  /** The last whole response made (to a keep-alive HTTP/1.1 request), or null. */
  response: Uint8Array | null = null;
  /** The Date field value of `response`. */
  date = "";

  constructor(bytes: Uint8Array<ArrayBuffer>) {
    this.bytes = bytes;
  }

  /** Makes and keeps the whole response of `head` and the contents, for `date`. */
  remake(head: Uint8Array, date: string): Uint8Array {
    const contents = this.bytes;
    const response = new Uint8Array(head.length + contents.length); // not a slab: it is kept
    response.set(head);
    response.set(contents, head.length);
    this.bytes = response.subarray(head.length);
    this.response = response;
    this.date = date;
    return response;
  }
}

/** An {@linkcode OpenFile} over contents a {@linkcode FileCache} holds. */
function memoryFile(
  stat: FileStat,
  held: HeldContents,
  etag: string,
  lastModified: string | undefined,
): OpenFile {
  return {
    stat,
    held,
    etag,
    lastModified,
    bytes: (start, end) => Promise.resolve(held.bytes.slice(start, end)),
    stream: (start, end) =>
      new ReadableStream<Uint8Array>({
        pull(controller) {
          controller.enqueue(held.bytes.slice(start, end));
          controller.close();
        },
      }, { highWaterMark: 0 }),
    close() {},
  };
}

/**
 * The variant of a cached file to answer `request` with, as {@linkcode chooseVariant} would
 * choose it: held contents, or the file opened at the path learnt (and then its own stat is the
 * one the answer uses). Null when it cannot be opened now: it was removed, or replaced by something
 * that is not a file, since the cache last asked.
 */
function chooseCachedVariant(
  request: Request,
  entry: CachedFile,
): ChosenFile | null | Promise<ChosenFile | null> {
  let variant = entry.variants[0];
  if (entry.codings.length > 0) {
    const coding = negotiateEncoding(request.headers.get("accept-encoding"), entry.codings);
    if (coding !== null) variant = entry.variants[entry.codings.indexOf(coding) + 1];
  }
  if (variant.memory !== null) {
    return { file: variant.memory, contentType: entry.contentType, coding: variant.coding };
  }
  return openCachedVariant(variant, entry.contentType);
}

/** {@linkcode chooseCachedVariant} for a variant whose contents are not held: opened again. */
async function openCachedVariant(
  variant: CachedVariant,
  contentType: string,
): Promise<ChosenFile | null> {
  const { coding } = variant;
  let file: OpenFile;
  try {
    file = await FILES.open(variant.target);
  } catch {
    return null;
  }
  if (file.stat.isFile) return { file, contentType, coding };
  file.close();
  return null;
}

/** Where a file answer looks, and how it finds the file again: one per request. */
interface FileLookup {
  /** Whether `.br` / `.gz` siblings are served. */
  readonly precompressed: boolean;
  /** The cache, or null when it is off (or the file is to be answered without learning it). */
  readonly store: FileCacheStore | null;
  /** What the request names, as the cache keys it. */
  readonly key: string;
  /** When the request began, by `Date.now()`: what it learns was checked then. */
  readonly checked: number;
  /** Finds on disk what the request names (again, when a cached file is gone). */
  readonly find: () => Promise<FoundFile | Response>;
}

/**
 * Answers with a file found on disk or in a cache, as {@linkcode serveFile} describes: the one
 * step every file answer goes through (a file named by a URL, an index file, a file given by path,
 * a fallback). Takes ownership of the file found. With a cache, what was found is stored under
 * `lookup.key` first (the contents read then, a failed read rejecting as a read while sending
 * would), and a cached file that is gone is forgotten and found again (`lookup.find`).
 */
function answerWithFile(
  request: Request,
  found: FoundFile | CachedFile,
  lookup: FileLookup,
): Response | Promise<Response> {
  if (found.kind === "file") return answerFoundFile(request, found, lookup);
  // A hit whose contents are held is answered in this turn, without a promise on the way.
  const chosen = chooseCachedVariant(request, found);
  return chosen instanceof Promise
    ? chosen.then((chosen) => answerWithChosen(request, chosen, lookup))
    : answerWithChosen(request, chosen, lookup);
}

/** {@linkcode answerWithFile} for a file found on disk: learnt by the cache first, if any. */
async function answerFoundFile(
  request: Request,
  found: FoundFile,
  lookup: FileLookup,
): Promise<Response> {
  const { precompressed, store, key } = lookup;
  let chosen: ChosenFile | null;
  if (store === null) {
    chosen = await chooseVariant(request, found, precompressed);
  } else {
    let entry: CachedFile;
    try {
      entry = await learnFile(store, found, precompressed, store.entries.get(key), lookup.checked);
    } catch (error) {
      store.delete(key);
      throw error;
    }
    store.put(key, entry);
    chosen = await chooseCachedVariant(request, entry);
  }
  return answerWithChosen(request, chosen, lookup);
}

/** The answer with the file chosen, or, when a cached one is gone (null), with what is there now. */
function answerWithChosen(
  request: Request,
  chosen: ChosenFile | null,
  lookup: FileLookup,
): Response | Promise<Response> {
  if (chosen === null) return answerFoundAgain(request, lookup);
  // Vary whenever siblings are looked for, found or not: caches must key on Accept-Encoding.
  const { file, contentType, coding } = chosen;
  return respondWithFile(request, file, contentType, coding, lookup.precompressed);
}

/** Forgets a cached file that is gone and answers with what the file system has now. */
async function answerFoundAgain(request: Request, lookup: FileLookup): Promise<Response> {
  lookup.store?.delete(lookup.key);
  const again = await lookup.find();
  if (again instanceof Response) return again;
  // Not learnt again in this request: what was there a moment ago just went.
  return answerWithFile(request, again, { ...lookup, store: null });
}

/** Canonical roots by the root as given, so that a request costs one realpath, not two. */
const CANONICAL_ROOTS = new Map<string, { path: string; expires: number }>();
/** How long a canonical root is trusted before it is resolved again. */
const CANONICAL_ROOT_MILLISECONDS = 1000;

/**
 * The root with its symlinks resolved, cached for a second. If the root is a symlink that is
 * pointed elsewhere, the old target's files are served for the rest of that second; paths are
 * built from and checked against the cached root, so nothing outside it is ever served.
 */
async function canonicalRoot(root: string): Promise<string> {
  const now = Date.now();
  const cached = CANONICAL_ROOTS.get(root);
  if (cached !== undefined && cached.expires > now) return cached.path;
  const path = await FILES.realPath(root);
  if (CANONICAL_ROOTS.size >= 64) CANONICAL_ROOTS.clear();
  CANONICAL_ROOTS.set(root, { path, expires: now + CANONICAL_ROOT_MILLISECONDS });
  return path;
}

/**
 * Serves one file for a GET or HEAD request, with everything a static file server owes a client:
 *
 * - `Content-Type` from the extension ({@linkcode contentTypeFor}), `Content-Length`,
 *   `Last-Modified`, a strong `ETag` from size and modification time (`"<size hex>-<mtime hex>"`),
 *   `Accept-Ranges: bytes` and `X-Content-Type-Options: nosniff` (on every response);
 * - conditional requests in RFC 9110 §13.2.2 order ({@linkcode evaluatePreconditions}): 304, 412;
 * - `Range` for GET ({@linkcode parseRange}), honoured only when `If-Range` (if any) holds: one
 *   range → 206 with `Content-Range`; several → 206 `multipart/byteranges`, ranges that overlap or
 *   nearly touch merged and the parts sent in ascending order; none satisfiable → 416 with
 *   `Content-Range: bytes *\/size`;
 * - precompressed `.br` / `.gz` siblings per `Accept-Encoding` ({@linkcode negotiateEncoding});
 * - small files answered from memory, and what a path resolves to remembered, in a
 *   {@linkcode FileCache} (`cache`; a change on disk is served within its `validFor`, a second by
 *   default); larger files streamed as the client reads them: never a whole large file in memory.
 *
 * `path` is used as given: no root, dotfile or symlink checks (that is {@linkcode serveDir}'s
 * job). Errors say only the status: 404 for a missing file or a directory, 403 when the file
 * cannot be read, 405 with `Allow` for other methods.
 *
 * @param request The request.
 * @param path The file's path on disk.
 * @param options Precompressed siblings and CORS.
 * @returns The response.
 *
 * @example
 * ```ts
 * import { Router, serve, serveFile } from "jsr:@wireserve/wireserve";
 * const router = new Router().get("/favicon.ico", (request) => serveFile(request, "./favicon.ico"));
 * serve({ port: 8080 }, router.fetch);
 * ```
 */
export async function serveFile(
  request: Request,
  path: string,
  options: ServeFileOptions = {},
): Promise<Response> {
  const cors = options.cors ?? false;
  let response: Response;
  if (request.method !== "GET" && request.method !== "HEAD") {
    response = methodResponse(request, cors);
  } else {
    const precompressed = options.precompressed ?? true;
    const store = cacheStoreOf(options);
    const key = `file\0${precompressed ? 1 : 0}\0${path}`;
    const find = () => openFileToServe(path);
    response = await answerThroughCache(request, {
      precompressed,
      store,
      key,
      checked: Date.now(),
      find,
    });
  }
  return cors ? withCors(response) : response;
}

/** Opens the regular file {@linkcode serveFile} was given, or says why not: 404 or 403. */
async function openFileToServe(path: string): Promise<FoundFile | Response> {
  let file: OpenFile;
  try {
    file = await FILES.open(path);
  } catch (error) {
    return fileErrorResponse(fileErrorStatus(error));
  }
  if (file.stat.isFile) return { kind: "file", file, target: path, path, resolve: AS_GIVEN };
  file.close();
  return fileErrorResponse(404);
}

/**
 * The answer with what `lookup.key` names in a cache, when there is an entry to trust (in this turn
 * when its contents are held); otherwise with what `lookup.find` finds on disk, where a response (an
 * error, a redirect, a listing) or a failure forgets the entry.
 */
function answerThroughCache(
  request: Request,
  lookup: FileLookup,
): Response | Promise<Response> {
  const { store, key } = lookup;
  const entry = store?.get(key, lookup.checked);
  if (entry !== undefined) return answerWithFile(request, entry, lookup);
  return findOnDisk(store, key, lookup.find).then((found) =>
    // Outside the mapping on purpose: a file that was found but fails as it is read is a fault of
    // the server, not of the request, and rejects so that serve()'s onError logs it.
    found instanceof Response ? found : answerWithFile(request, found, lookup)
  );
}

/** What `find` finds on disk; a response or a failure forgets the cache entry at `key`. */
async function findOnDisk(
  store: FileCacheStore | null,
  key: string,
  find: () => Promise<FoundFile | Response>,
): Promise<FoundFile | Response> {
  try {
    const found = await find();
    if (found instanceof Response) store?.delete(key);
    return found;
  } catch (error) {
    store?.delete(key);
    throw error;
  }
}

/** Escapes text for HTML content and quoted attribute values. */
function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A size for people: bytes below 1 KiB, then KiB, MiB, GiB with one decimal. */
function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** One entry of a directory listing. */
interface ListingEntry {
  name: string;
  directory: boolean;
  size: number | null;
  mtime: number | null;
}

/** Renders a directory listing: directories first, then files, each group sorted by name. */
function renderListing(title: string, entries: ListingEntry[], atRoot: boolean): string {
  entries.sort((a, b) =>
    a.directory !== b.directory
      ? (a.directory ? -1 : 1)
      : a.name < b.name
      ? -1
      : a.name > b.name
      ? 1
      : 0
  );
  let rows = atRoot ? "" : `<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n`;
  for (const entry of entries) {
    // encodeURIComponent leaves no character that is special in HTML except ' (harmless inside
    // double quotes), and turns ":" into %3A so a name cannot become a scheme ("javascript:").
    const suffix = entry.directory ? "/" : "";
    let href: string;
    try {
      href = encodeURIComponent(entry.name) + suffix;
    } catch {
      continue; // a name with a lone surrogate has no URL
    }
    const size = entry.directory || entry.size === null ? "-" : formatSize(entry.size);
    const date = entry.mtime === null
      ? "-"
      : new Date(entry.mtime).toISOString().slice(0, 16).replace("T", " ");
    rows += `<tr><td><a href="${escapeHtml(href)}">${escapeHtml(entry.name + suffix)}</a></td>` +
      `<td>${size}</td><td>${date}</td></tr>\n`;
  }
  const heading = escapeHtml(title);
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>Index of ${heading}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}td{padding:0 1.5em 0 0}td+td{text-align:right;white-space:nowrap}</style>
</head>
<body>
<h1>Index of ${heading}</h1>
<table>
<thead><tr><th align="left">Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead>
<tbody>
${rows}</tbody>
</table>
</body>
</html>
`;
}

/** {@linkcode ServeDirOptions} with their defaults, checked. */
interface DirSettings {
  root: string;
  /** Without a trailing slash: `""` or, say, `"/static"`. */
  urlPrefix: string;
  listing: boolean;
  dotfiles: boolean;
  followSymlinks: boolean;
  precompressed: boolean;
  /** The index file's name, or null for none. */
  index: string | null;
  /** The fallback file's path under the root, or null for none. */
  fallback: string | null;
}

/** Reads {@linkcode serveDir}'s options; a root or prefix that cannot work is a TypeError. */
function dirSettings(options: ServeDirOptions): DirSettings {
  if (typeof options.root !== "string" || options.root === "") {
    throw new TypeError("Cannot serve directory: options.root is not a path");
  }
  const urlPrefix = (options.urlPrefix ?? "").replace(/\/+$/, "");
  if (urlPrefix !== "" && urlPrefix.charCodeAt(0) !== 0x2f) {
    throw new TypeError(
      `Cannot serve directory: options.urlPrefix ${
        JSON.stringify(urlPrefix)
      } does not start with /`,
    );
  }
  const index = options.index ?? "index.html";
  return {
    root: options.root,
    urlPrefix,
    listing: options.listing ?? true,
    dotfiles: options.dotfiles ?? false,
    followSymlinks: options.followSymlinks ?? false,
    precompressed: options.precompressed ?? true,
    index: index === false || index === "" ? null : index,
    fallback: options.fallback === undefined || options.fallback === ""
      ? null
      : options.fallback.replace(/^\/+/, ""),
  };
}

/**
 * Whether a request that matched no file gets `serveDir`'s fallback: a navigation (its `Accept`
 * names `text/html`; `fetch()` and `<script>` send other types, or any type) to a path without a dot
 * in its last segment and without a dot segment, as Vite's and connect-history-api-fallback's do.
 */
function takesFallback(request: Request): boolean {
  const accept = request.headers.get("accept") ?? "";
  if (!/(^|[\s,])text\/html\s*(;|,|$)/i.test(accept)) return false;
  const url = request.url;
  const pathStart = url.indexOf("/", url.indexOf("//") + 2);
  const query = url.indexOf("?", pathStart);
  const path = pathStart === -1 ? "/" : url.slice(pathStart, query === -1 ? url.length : query);
  const segments = path.split("/");
  return !segments.some((segment) =>
    segment.startsWith(".") || segment.startsWith("%2e") ||
    segment.startsWith("%2E")
  ) && !segments[segments.length - 1].includes(".");
}

/**
 * The answer of the fallback file, found as if its own path had been asked for (conditions and
 * all, through the same cache), except that a directory there is 404.
 */
async function answerFallback(
  request: Request,
  settings: DirSettings,
  store: FileCacheStore | null,
  fallback: string,
): Promise<Response> {
  let target: Request;
  try {
    const url = new URL(request.url);
    target = new Request(`${url.origin}/${encodeURI(fallback)}`, {
      method: request.method,
      headers: request.headers,
    });
  } catch (error) {
    return fileErrorResponse(fileErrorStatus(error));
  }
  return await answerFromDir(target, { ...settings, urlPrefix: "", fallback: null }, store, false);
}

/** A directory a URL names, for {@linkcode answerDirectory}. */
interface FoundDirectory {
  readonly kind: "directory";
  /** Its path as the URL spells it below the root: its index and entries are looked up in it. */
  path: string;
  /** The path below the root the URL names. */
  target: DirTarget;
  /** The separator of the root's paths: `/`, or `\` on Windows. */
  separator: string;
  resolve: ResolvePath;
}

/** The path below the root a request names: the URL step of {@linkcode serveDir}. */
interface DirTarget {
  /** The decoded segments of the URL path below the prefix. */
  segments: string[];
  trailingSlash: boolean;
  /** The URL's query with its `?`, or `""`: kept by the redirect to the trailing slash. */
  search: string;
}

/**
 * The path below the root a request names, or the refusal: the URL path, without the prefix, is
 * decoded ({@linkcode decodeRequestPath}) and checked against the dotfile policy (400 or 404). Pure:
 * the file system is asked nothing yet.
 */
function dirTarget(request: Request, settings: DirSettings): DirTarget | Response {
  // request.url is serialized by the URL parser: scheme "://" authority path [?query].
  const url = request.url;
  const pathStart = url.indexOf("/", url.indexOf("//") + 2);
  let queryStart = url.indexOf("?", pathStart);
  if (queryStart === -1) queryStart = url.length;
  const hash = url.indexOf("#", pathStart);
  const search = url.slice(queryStart, hash === -1 || hash < queryStart ? url.length : hash);
  let pathname = pathStart === -1 ? "/" : url.slice(pathStart, queryStart);
  const { urlPrefix } = settings;
  if (urlPrefix !== "") {
    if (pathname !== urlPrefix && !pathname.startsWith(`${urlPrefix}/`)) {
      return fileErrorResponse(404);
    }
    pathname = pathname.slice(urlPrefix.length) || "";
  }
  const decoded = pathname === ""
    ? { segments: [], trailingSlash: false }
    : decodeRequestPath(pathname);
  if (decoded === null) return fileErrorResponse(400);
  const { segments, trailingSlash } = decoded;
  if (!settings.dotfiles && segments.some((segment) => segment.charCodeAt(0) === 0x2e)) {
    return fileErrorResponse(404);
  }
  return { segments, trailingSlash, search };
}

/**
 * The key of what a path below the root resolves to, in a cache shared by every `serveDir`:
 * everything the answer depends on besides the file system. NUL cannot occur in a path.
 */
function dirCacheKey(settings: DirSettings, target: DirTarget, directories: boolean): string {
  const flags = `${settings.followSymlinks ? 1 : 0}${settings.precompressed ? 1 : 0}` +
    `${directories ? 1 : 0}`;
  return `dir\0${settings.root}\0${flags}\0${settings.index ?? ""}\0${target.segments.join("/")}${
    target.trailingSlash ? "/" : ""
  }`;
}

/**
 * Finds what a path below the root names on disk, the second step of {@linkcode serveDir}: the
 * path is joined to the canonical root and opened, every symlink resolved and the result checked
 * to stay below the root. A path that names nothing to serve is answered here (404; a file with a
 * trailing slash is 404, as nginx answers). A failure of the file system itself is thrown.
 */
async function resolveTarget(
  target: DirTarget,
  settings: DirSettings,
): Promise<FoundFile | FoundDirectory | Response> {
  const { segments, trailingSlash } = target;
  // What may be served: the canonical path must stay below the canonical root.
  let root: string;
  try {
    root = await canonicalRoot(settings.root);
  } catch {
    return fileErrorResponse(404);
  }
  const separator = root.includes("\\") && !root.includes("/") ? "\\" : "/";
  const rootPrefix = root.endsWith(separator) ? root : root + separator;
  const resolve: ResolvePath = async (path) => {
    if (settings.followSymlinks) return path;
    const real = await FILES.realPath(path);
    return real === root || real.startsWith(rootPrefix) ? real : null;
  };

  const path = segments.length === 0 ? root : rootPrefix + segments.join(separator);
  const opened = await resolve(path);
  if (opened === null) return fileErrorResponse(404);
  const file = await FILES.open(opened);
  if (file.stat.isFile && !trailingSlash) {
    return { kind: "file", file, target: opened, path, resolve };
  }
  // A directory is needed only for its stat: nothing is read from its handle.
  file.close();
  if (file.stat.isFile || !file.stat.isDirectory) return fileErrorResponse(404);
  return { kind: "directory", path, target, separator, resolve };
}

/**
 * What a directory is answered with, the third step of {@linkcode serveDir} for one: a redirect
 * to its URL with a trailing slash, so that relative links in its page resolve inside it; then its
 * index file, returned to be served as any file is; then a listing, or 404 with `listing: false`.
 */
async function answerDirectory(
  request: Request,
  directory: FoundDirectory,
  settings: DirSettings,
): Promise<FoundFile | Response> {
  const { path, separator, resolve } = directory;
  const { segments, trailingSlash, search } = directory.target;
  if (!trailingSlash) {
    // Built from the decoded segments, never from the raw path: it always starts with one "/"
    // followed by a non-empty segment or nothing, so it cannot become "//host" (another site).
    const location = `${settings.urlPrefix}/${segments.map(encodeURIComponent).join("/")}${
      segments.length > 0 ? "/" : ""
    }`;
    const headers = baseHeaders();
    headers.set("location", location + search);
    headers.set("content-type", "text/plain; charset=utf-8");
    return new FastResponse("301 Moved Permanently\n", { status: 301, headers });
  }
  if (settings.index !== null) {
    const indexPath = path + (path.endsWith(separator) ? "" : separator) + settings.index;
    // No index: list the directory.
    const index = await openIfFile(indexPath, resolve);
    if (index !== null) return { kind: "file", ...index, path: indexPath, resolve };
  }
  return settings.listing ? listDirectory(request, directory, settings) : fileErrorResponse(404);
}

/**
 * The HTML listing of a directory ({@linkcode renderListing}): dotfiles left out unless allowed,
 * and entries that lead outside the root too, since they would only answer 404.
 */
async function listDirectory(
  request: Request,
  directory: FoundDirectory,
  settings: DirSettings,
): Promise<Response> {
  const { path, separator, resolve } = directory;
  const { segments } = directory.target;
  const names = await FILES.readDir(path);
  const directoryPath = path.endsWith(separator) ? path : path + separator;
  const entries = await Promise.all(
    names
      .filter((name) => settings.dotfiles || name.charCodeAt(0) !== 0x2e)
      .map(async (name): Promise<ListingEntry | null> => {
        try {
          const target = await resolve(directoryPath + name);
          if (target === null) return null;
          const stat = await FILES.stat(target);
          return { name, directory: stat.isDirectory, size: stat.size, mtime: stat.mtime };
        } catch {
          return { name, directory: false, size: null, mtime: null };
        }
      }),
  );
  const title = `${settings.urlPrefix}/${segments.join("/")}${segments.length > 0 ? "/" : ""}`;
  const html = TEXT_ENCODER.encode(
    renderListing(title, entries.filter((entry) => entry !== null), segments.length === 0),
  );
  const headers = baseHeaders();
  headers.set("content-type", "text/html; charset=utf-8");
  headers.set("content-length", String(html.length));
  return new FastResponse(request.method === "HEAD" ? null : html, { headers });
}

/**
 * Serves the files below a directory, for GET and HEAD: a static file server as
 * `@std/http`'s `serveDir` or nginx's static module, on the fetch API.
 *
 * A request path maps to a file below `root` ({@linkcode decodeRequestPath}), which is served as
 * {@linkcode serveFile} describes. On top of that:
 *
 * - safety: a path that is malformed, or whose decoded segments are `.`, `..`, or contain `/`, `\`
 *   or NUL, is 400; what the path names is checked by its canonical path, so a symlink that leads
 *   outside `root` is 404 unless `followSymlinks`; a segment starting with `.` is 404 unless
 *   `dotfiles`. No response ever names a file system path.
 * - directories: a URL without a trailing slash is redirected (301) to the one with it, query
 *   kept; then `index` is served if it exists; otherwise an HTML listing (names escaped, sizes,
 *   modification times, directories first, sorted by name), or 404 with `listing: false`.
 * - `/a/file/` (a file with a trailing slash) is 404, as nginx answers.
 *
 * @param request The request.
 * @param options The root and the policies; see {@linkcode ServeDirOptions}.
 * @returns The response.
 *
 * @example Serving ./public on port 8080
 * ```ts
 * import { serve, serveDir } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, (request) => serveDir(request, { root: "./public" }));
 * ```
 *
 * @example Under a prefix, beside other routes
 * ```ts
 * import { Router, serve, serveDir } from "jsr:@wireserve/wireserve";
 * const router = new Router()
 *   .get("/", () => new Response("home"))
 *   .get("/static/*", (request) => serveDir(request, { root: "./public", urlPrefix: "/static" }));
 * serve({ port: 8080 }, router.fetch);
 * ```
 */
export async function serveDir(request: Request, options: ServeDirOptions): Promise<Response> {
  const cors = options.cors ?? false;
  let response: Response;
  if (request.method !== "GET" && request.method !== "HEAD") {
    response = methodResponse(request, cors);
  } else {
    const settings = dirSettings(options);
    const store = cacheStoreOf(options);
    response = await answerFromDir(request, settings, store, true);
    if (response.status === 404 && settings.fallback !== null && takesFallback(request)) {
      response = await answerFallback(request, settings, store, settings.fallback);
    }
  }
  return cors ? withCors(response) : response;
}

/**
 * {@linkcode serveDir}'s answer to a GET or HEAD, before the fallback and CORS: the path the URL
 * names ({@linkcode dirTarget}), then what a cache remembers of it, or else what the file system
 * has there ({@linkcode resolveTarget}, {@linkcode answerDirectory}), then the file's answer.
 * `directories: false` answers a directory with 404, for the fallback.
 */
function answerFromDir(
  request: Request,
  settings: DirSettings,
  store: FileCacheStore | null,
  directories: boolean,
): Response | Promise<Response> {
  const target = dirTarget(request, settings);
  if (target instanceof Response) return target;
  const key = store === null ? "" : dirCacheKey(settings, target, directories);
  const find = async (): Promise<FoundFile | Response> => {
    try {
      const found = await resolveTarget(target, settings);
      if (found instanceof Response || found.kind === "file") return found;
      return directories ? await answerDirectory(request, found, settings) : fileErrorResponse(404);
    } catch (error) {
      // Finding what to serve failed: say so with the status (404, 403 or 500), never the path.
      return fileErrorResponse(fileErrorStatus(error));
    }
  };
  const { precompressed } = settings;
  return answerThroughCache(request, { precompressed, store, key, checked: Date.now(), find });
}

//#endregion
//#region Compression

/** A content coding that {@linkcode compress} can apply (RFC 9110 §8.4.1; zstd: RFC 8878). */
export type CompressionCoding = "br" | "zstd" | "gzip";

/** Options for {@linkcode compress}. */
export interface CompressOptions {
  /**
   * The codings offered, most preferred first: among those the client accepts with the same
   * q-value, the first wins. Brotli first because every current browser accepts it and it is
   * the smallest for text at a speed fit for dynamic responses (quality 3); zstd before gzip, for
   * clients that name zstd and not brotli.
   * @default {["br", "zstd", "gzip"]}
   */
  encodings?: readonly CompressionCoding[];
  /**
   * Bodies of a known length under this many bytes are sent as they are: below about a TCP
   * packet, compressing saves next to nothing and costs a compressor. Deno.serve's threshold is
   * 64 B, nginx's `gzip_min_length` 20 B, Caddy's `minimum_length` 512 B; wireserve takes
   * Caddy's. A streamed body of unknown length is always compressed.
   * @default {512}
   */
  minBytes?: number;
  /**
   * Whether a media type (lower case, without parameters, e.g. `"text/html"`) is worth
   * compressing. The default says yes to text, JSON, JavaScript, XML, SVG, wasm, uncompressed
   * fonts and a few more; images, audio, video, archives and anything without a `Content-Type`
   * are never compressed, because they are compressed already or unknown.
   */
  compressible?: (mediaType: string) => boolean;
  /**
   * Compression levels: gzip 1-9 (default 6, zlib's), brotli quality 0-11 (default 3: 11 is
   * for files compressed once, far too slow per response; 3 compresses JSON far better than
   * gzip 6 in about its time, and nearly as well as 5 in half of its), zstd 1-19 (default 3,
   * zstd's).
   */
  level?: { gzip?: number; br?: number; zstd?: number };
}

/** The codings this runtime's `node:zlib` has: zstd came to Node in 22.15 / 23.8. */
const AVAILABLE_CODINGS: ReadonlySet<CompressionCoding> = new Set<CompressionCoding>(
  typeof nodeZlib.zstdCompressSync === "function" ? ["br", "zstd", "gzip"] : ["br", "gzip"],
);

/** Media types compressed besides `text/*` and any `+json` / `+xml` type. */
const COMPRESSIBLE_TYPES: ReadonlySet<string> = new Set([
  "application/javascript",
  "application/ecmascript",
  "application/x-javascript",
  "application/json",
  "application/x-ndjson",
  "application/xml",
  "application/wasm",
  "application/graphql",
  "application/x-www-form-urlencoded",
  "application/vnd.ms-fontobject",
  "application/x-font-ttf",
  "font/ttf",
  "font/otf",
  "image/svg+xml",
  "image/bmp",
  "image/x-icon",
  "image/vnd.microsoft.icon",
]);

/** The default of {@linkcode CompressOptions.compressible}. */
function isCompressibleType(mediaType: string): boolean {
  return mediaType.startsWith("text/") || COMPRESSIBLE_TYPES.has(mediaType) ||
    mediaType.endsWith("+json") || mediaType.endsWith("+xml");
}

/** `Cache-Control` forbids transforming the content (RFC 9111 §5.2.2.6, §5.2.1.6). */
function forbidsTransform(cacheControl: string | null): boolean {
  return listsToken(cacheControl, "no-transform");
}

/** Whether a `Vary` value already covers `Accept-Encoding` (or everything). */
function variesByEncoding(vary: string | null): boolean {
  return listsToken(vary, "accept-encoding") || listsToken(vary, "*");
}

/** The resolved settings of one `compress` middleware. */
interface CompressSettings {
  encodings: readonly CompressionCoding[];
  minBytes: number;
  compressible: (mediaType: string) => boolean;
  gzip: nodeZlib.ZlibOptions;
  br: nodeZlib.BrotliOptions;
  zstd: { params: Record<number, number> };
}

/**
 * Compresses the responses of `handler` with gzip, brotli or zstd, as the request's
 * `Accept-Encoding` allows (RFC 9110 §12.5.3: q-values, `identity;q=0` and `*` respected). A
 * fetch-API middleware: it works the same under `serve`, `Deno.serve` and `Bun.serve`, on every
 * runtime, with `node:zlib`.
 *
 * A response is sent as it is when compressing it would be wrong or pointless: a HEAD request, a
 * status without a body (1xx, 204, 304), a 206 or any response with `Content-Range`, one that
 * has a `Content-Encoding` already (a precompressed file from {@linkcode serveDir}), one with
 * `Cache-Control: no-transform`, a media type not worth compressing, or a body of known length
 * under `minBytes`. Every response it could compress gets `Vary: Accept-Encoding`, whether this
 * client accepted a coding or not, so that caches keep the versions apart.
 *
 * A compressed response loses `Content-Length` (the server frames it anew) and `Accept-Ranges`
 * (ranges of an on-the-fly coding are not served), and a strong `ETag` becomes weak: the bytes
 * differ from the identity ones, the meaning does not (RFC 9110 §8.8.1).
 *
 * A body that is there at once is compressed in one call. A streamed body is compressed as it
 * streams: each chunk the handler's stream yields is compressed and flushed, so that server-sent
 * events and other slow streams still arrive chunk by chunk, and the next chunk is read only
 * when the compressed one has been taken, so backpressure holds.
 *
 * @param handler The handler whose responses to compress.
 * @param options The codings, threshold, types and levels.
 * @returns A handler that calls `handler` and compresses what it answers.
 * @throws {RangeError} For an option out of range, or a coding this runtime does not have.
 *
 * @example
 * ```ts
 * import { compress, serve } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, compress(() => Response.json({ hello: "world".repeat(200) })));
 * ```
 */
export function compress<Info = ConnInfo>(
  handler: (request: Request, info: Info) => Response | Promise<Response>,
  options: CompressOptions = {},
): (request: Request, info: Info) => Response | Promise<Response> {
  const settings = compressSettings(options);
  return (request, info) => {
    const result = handler(request, info);
    return result instanceof Promise
      ? result.then((response) => compressResponse(request, response, settings))
      : compressResponse(request, result, settings);
  };
}

/** Checks and resolves the options of `compress`. */
function compressSettings(options: CompressOptions): CompressSettings {
  const encodings = options.encodings ?? ["br", "zstd", "gzip"];
  for (const coding of encodings) {
    if (!AVAILABLE_CODINGS.has(coding)) {
      throw new RangeError(`Cannot compress: this runtime has no ${JSON.stringify(coding)}`);
    }
  }
  const minBytes = options.minBytes ?? 512;
  if (!Number.isInteger(minBytes) || minBytes < 0) {
    throw new RangeError(`Cannot compress: minBytes must be a whole number, got ${minBytes}`);
  }
  const level = (name: string, value: number | undefined, fallback: number, max: number) => {
    if (value === undefined) return fallback;
    if (!Number.isInteger(value) || value < 0 || value > max) {
      throw new RangeError(`Cannot compress: ${name} level must be 0-${max}, got ${value}`);
    }
    return value;
  };
  const constants = nodeZlib.constants;
  return {
    encodings: encodings.filter((coding) => AVAILABLE_CODINGS.has(coding)),
    minBytes,
    compressible: options.compressible ?? isCompressibleType,
    gzip: { level: level("gzip", options.level?.gzip, 6, 9) },
    br: {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: level("br", options.level?.br, 3, 11),
        [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      },
    },
    zstd: {
      params: { [constants.ZSTD_c_compressionLevel]: level("zstd", options.level?.zstd, 3, 19) },
    },
  };
}

/** The response, compressed when the rules of {@linkcode compress} allow it. */
function compressResponse(
  request: Request,
  response: Response,
  settings: CompressSettings,
): Response | Promise<Response> {
  if (!(response instanceof Response) || request.method === "HEAD") return response;
  const status = response.status;
  if (status < 200 || status === 204 || status === 206 || status === 304) return response;
  // A FastResponse's body is not asked for here: that would give up its fast path.
  if (!(response instanceof FastResponse) && response.body === null) return response;
  const headers = response.headers;
  if (headers.has("content-encoding") || headers.has("content-range")) return response;
  if (forbidsTransform(headers.get("cache-control"))) return response;
  const type = headers.get("content-type");
  if (type === null) return response;
  const semicolon = type.indexOf(";");
  const mediaType = trimOws(semicolon === -1 ? type : type.slice(0, semicolon)).toLowerCase();
  if (!settings.compressible(mediaType)) return response;
  const declared = headers.get("content-length");
  const tooSmall = declared !== null && /^\d+$/.test(declared) &&
    Number(declared) < settings.minBytes;
  const coding = tooSmall
    ? null
    : negotiateEncoding(request.headers.get("accept-encoding"), settings.encodings);
  if (coding === null) {
    return variesByEncoding(headers.get("vary"))
      ? response
      : withFields(response, [["vary", appendVary(headers.get("vary"))]]);
  }
  return compressBody(response, coding as CompressionCoding, settings);
}

/** `Vary` with `Accept-Encoding` added. */
function appendVary(vary: string | null): string {
  return vary === null || trimOws(vary) === "" ? "Accept-Encoding" : `${vary}, Accept-Encoding`;
}

/** Reads the body and answers it compressed: in one call when it is all there, else streaming. */
async function compressBody(
  response: Response,
  coding: CompressionCoding,
  settings: CompressSettings,
): Promise<Response> {
  const headers = new Headers(response.headers);
  if (!variesByEncoding(headers.get("vary"))) headers.set("vary", appendVary(headers.get("vary")));
  const init = { status: response.status, statusText: response.statusText, headers };
  const prefix = await readBodyPrefix(response);
  if (prefix.done) {
    // Stream chunks and concat's result are backed by an ArrayBuffer, never a shared one.
    const body = (prefix.chunks.length === 1
      ? prefix.chunks[0]
      : concat(prefix.chunks, prefix.length)) as Uint8Array<ArrayBuffer>;
    if (prefix === BODYLESS) {
      return new FastResponse(null, init);
    }
    if (body.length < settings.minBytes) {
      return new FastResponse(body, init);
    }
    markCompressed(headers, coding);
    return new FastResponse(compressSync(body, coding, settings), init);
  }
  markCompressed(headers, coding);
  return new Response(compressedStream(prefix, coding, settings), init);
}

/** The fields of a response whose body is now in `coding`. */
function markCompressed(headers: Headers, coding: CompressionCoding): void {
  headers.set("content-encoding", coding);
  headers.delete("content-length");
  headers.delete("accept-ranges");
  const etag = headers.get("etag");
  if (etag !== null && etag.startsWith('"')) headers.set("etag", `W/${etag}`);
}

/** Compresses a whole body in one call. */
function compressSync(
  body: Uint8Array,
  coding: CompressionCoding,
  settings: CompressSettings,
): Uint8Array<ArrayBuffer> {
  if (coding === "gzip") return nodeZlib.gzipSync(body, settings.gzip);
  if (coding === "zstd") return nodeZlib.zstdCompressSync(body, settings.zstd);
  const params = {
    ...settings.br.params,
    [nodeZlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length,
  };
  return nodeZlib.brotliCompressSync(body, { params });
}

/** A streaming compressor of `node:zlib`, and the flush that makes what it holds decodable. */
function compressor(
  coding: CompressionCoding,
  settings: CompressSettings,
): { stream: nodeZlib.Gzip | nodeZlib.BrotliCompress | nodeZlib.ZstdCompress; flush: number } {
  const constants = nodeZlib.constants;
  if (coding === "gzip") {
    return { stream: nodeZlib.createGzip(settings.gzip), flush: constants.Z_SYNC_FLUSH };
  }
  if (coding === "zstd") {
    return { stream: nodeZlib.createZstdCompress(settings.zstd), flush: constants.ZSTD_e_flush };
  }
  return {
    stream: nodeZlib.createBrotliCompress(settings.br),
    flush: constants.BROTLI_OPERATION_FLUSH,
  };
}

/**
 * The body compressed as it streams. Each pull reads the next chunk of the source, compresses it
 * and flushes, so that each chunk is decodable when it arrives; nothing is read ahead of what the
 * consumer takes.
 */
function compressedStream(
  prefix: BodyPrefix,
  coding: CompressionCoding,
  settings: CompressSettings,
): ReadableStream<Uint8Array> {
  const reader = prefix.reader as ReadableStreamDefaultReader<Uint8Array>;
  const { stream, flush } = compressor(coding, settings);
  const output: Uint8Array[] = [];
  let failure: unknown = null;
  stream.on("data", (chunk: Uint8Array) => output.push(chunk));
  stream.on("error", (error: unknown) => failure ??= error);
  let held: Uint8Array[] | null = prefix.chunks;
  let pending = prefix.pending;
  /** Feeds `input`, then flushes (or ends): resolves when the output is in `output`. */
  const feed = (input: Uint8Array[], end: boolean) =>
    new Promise<void>((resolve, reject) => {
      for (const piece of input) stream.write(piece);
      const done = () => failure === null ? resolve() : reject(failure);
      if (end) {
        stream.once("end", done);
        stream.once("error", done);
        stream.end();
      } else {
        stream.flush(flush, done);
      }
    });
  const deliver = (controller: ReadableStreamDefaultController<Uint8Array>): boolean => {
    if (output.length === 0) return false;
    for (const chunk of output) controller.enqueue(chunk);
    output.length = 0;
    return true;
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        while (true) {
          if (held !== null) {
            const input = held;
            held = null;
            if (input.length > 0) {
              await feed(input, false);
              if (deliver(controller)) return;
            }
            continue;
          }
          const result = await (pending ?? reader.read());
          pending = null;
          if (result.done) {
            await feed([], true);
            deliver(controller);
            controller.close();
            return;
          }
          if (!(result.value instanceof Uint8Array)) {
            throw new TypeError("Cannot compress response body: a chunk is not a Uint8Array");
          }
          if (result.value.length === 0) continue;
          await feed([result.value], false);
          if (deliver(controller)) return;
        }
      } catch (error) {
        stream.destroy();
        reader.cancel(error).catch(() => {});
        throw error;
      }
    },
    cancel(reason) {
      stream.destroy();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

//#endregion
//#region Rate limiting

/**
 * The bucket key for a client address: an IPv4 address as it is, an IPv6 address by its /64
 * prefix. A client is usually given a whole /64 and may use any address in it, so keying each
 * IPv6 address alone would give one client 2^64 buckets (and let it flush everyone else's).
 */
function addressKey(address: string): string {
  if (!address.includes(":")) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1];
  const zone = address.indexOf("%");
  const bare = (zone === -1 ? address : address.slice(0, zone)).toLowerCase();
  const gap = bare.indexOf("::");
  let groups: string[];
  if (gap === -1) groups = bare.split(":");
  else {
    const head = bare.slice(0, gap) === "" ? [] : bare.slice(0, gap).split(":");
    const tail = bare.slice(gap + 2) === "" ? [] : bare.slice(gap + 2).split(":");
    // An embedded IPv4 tail (::1.2.3.4) counts as two groups; only the first four matter here.
    const tailGroups = tail.length > 0 && tail[tail.length - 1].includes(".")
      ? tail.length + 1
      : tail.length;
    groups = [...head, ...Array(Math.max(0, 8 - head.length - tailGroups)).fill("0"), ...tail];
  }
  if (groups.length < 4) return address; // not an address: keep it whole
  return `${
    groups.slice(0, 4).map((group) => (parseInt(group, 16) || 0).toString(16)).join(":")
  }::/64`;
}

/**
 * Options for {@linkcode rateLimit}.
 *
 * @typeParam Info What the server passes to handlers (`ConnInfo`, or `ConnInfo<Addr>` on a Unix
 * socket).
 */
export interface RateLimitOptions<Info extends ConnInfo<Addr> = ConnInfo> {
  /** Requests a client may make in a burst; the bucket's capacity. */
  limit: number;
  /**
   * The time in which an empty bucket refills to `limit`, in milliseconds: the sustained rate is
   * `limit` per `windowMs`.
   * @default {60000}
   */
  windowMs?: number;
  /**
   * Which bucket a request draws from. Defaults to the client address, as
   * {@linkcode clientAddress} finds it with `trustProxy`; an IPv6 address counts by its /64 prefix,
   * because one client usually holds a whole /64.
   */
  key?: (request: Request, info: Info) => string;
  /** Proxies whose forwarding header names the client. None by default. */
  trustProxy?: TrustProxy;
  /**
   * The header those proxies write.
   * @default {"x-forwarded-for"}
   */
  proxyHeader?: ProxyHeader;
  /**
   * Buckets kept at most. Past it, the bucket unused for longest is forgotten (that client starts
   * again with a full bucket, which after the longest idle time it most likely had anyway).
   * @default {10000}
   */
  maxKeys?: number;
  /**
   * The policy name in the `RateLimit` and `RateLimit-Policy` fields.
   * @default {"default"}
   */
  policy?: string;
}

/** One client's bucket: tokens left when last seen, and when that was. */
interface Bucket {
  tokens: number;
  updated: number;
}

/**
 * Limits how fast each client may make requests, as a token bucket: a bucket holds up to `limit`
 * tokens, refills at `limit` per `windowMs`, and each request takes one. A request that finds the
 * bucket empty gets 429 with `Retry-After`. Why a bucket rather than windows: it needs two numbers
 * per client whatever the traffic, and it has no window edge at which a client can fit two
 * windows' worth of requests into an instant.
 *
 * Every response carries the IETF `RateLimit-Policy` and `RateLimit` fields
 * (draft-ietf-httpapi-ratelimit-headers): the quota `q`, its window `w`, what remains `r`, and the
 * seconds until the bucket is full again `t`.
 *
 * The buckets live in this process (in each worker of {@linkcode startWorkers}, its own): N
 * workers let one client make up to N × `limit` requests. A limit that must hold across
 * processes needs its state outside them.
 *
 * @typeParam Info What the server passes to handlers.
 * @param options The limit, window, key and memory bound.
 * @param handler The handler to protect.
 * @returns A handler that applies the limit, then calls `handler`.
 *
 * @example 100 requests a minute per client address
 * ```ts
 * import { rateLimit, serve } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, rateLimit({ limit: 100, windowMs: 60_000 }, () => new Response("ok")));
 * ```
 */
export function rateLimit<Info extends ConnInfo<Addr> = ConnInfo>(
  options: RateLimitOptions<Info>,
  handler: Handler<Info>,
): Handler<Info> {
  const limit = checkRateOption("limit", options.limit);
  const windowMs = checkRateOption("windowMs", options.windowMs ?? 60_000);
  const maxKeys = checkRateOption("maxKeys", options.maxKeys ?? 10_000);
  const policy = options.policy ?? "default";
  if (!isToken(policy)) {
    throw new TypeError(`Cannot limit rate: policy ${JSON.stringify(policy)} is not a token`);
  }
  const refillPerMs = limit / windowMs;
  const key = options.key ??
    ((request: Request, info: Info) =>
      addressKey(clientAddress(request, info, options.trustProxy, options.proxyHeader)));
  const policyField = `"${policy}";q=${limit};w=${Math.ceil(windowMs / 1000)}`;
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  const buckets = new Map<string, Bucket>();

  return (request, info) => {
    const now = Date.now();
    const id = key(request, info);
    let bucket = buckets.get(id);
    if (bucket === undefined) {
      if (buckets.size >= maxKeys) buckets.delete(buckets.keys().next().value as string);
      bucket = { tokens: limit, updated: now };
    } else {
      buckets.delete(id);
      bucket.tokens = Math.min(limit, bucket.tokens + (now - bucket.updated) * refillPerMs);
      bucket.updated = now;
    }
    buckets.set(id, bucket);
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    const secondsToFull = Math.ceil((limit - bucket.tokens) / refillPerMs / 1000);
    const fields: Array<[string, string]> = [
      ["ratelimit-policy", policyField],
      ["ratelimit", `"${policy}";r=${Math.floor(bucket.tokens)};t=${secondsToFull}`],
    ];
    if (!allowed) {
      const retryAfter = Math.max(1, Math.ceil((1 - bucket.tokens) / refillPerMs / 1000));
      return plainResponse(429, {
        "retry-after": String(retryAfter),
        ...Object.fromEntries(fields),
      });
    }
    const result = handler(request, info);
    return result instanceof Promise
      ? result.then((response) => withFields(response, fields))
      : withFields(result, fields);
  };
}

/** Checks a positive whole-number option of rateLimit. */
function checkRateOption(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`Cannot limit rate: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** Adds header fields to a response, copying it when its headers are immutable. */
function withFields(response: Response, fields: Array<[string, string]>): Response {
  if (!(response instanceof Response)) return response;
  try {
    for (const [name, value] of fields) response.headers.set(name, value);
    return response;
  } catch {
    // Response.redirect() and fetched responses have immutable headers.
    const copy = new Response(response.body, response);
    for (const [name, value] of fields) copy.headers.set(name, value);
    return copy;
  }
}

//#endregion
//#region CLI

/** The pages of the tutorial's demo site. */
const DEMO_PAGES: Readonly<Record<string, { title: string; body: string }>> = {
  "/": {
    title: "Hello from wireserve",
    body: `<p>This page came over a raw TCP socket, parsed and answered by one TypeScript file.</p>
<p><a href="/about">About this server</a></p>`,
  },
  "/about": {
    title: "About",
    body: `<p>wireserve is a strict HTTP/1.1 server written from the wire up. It runs unchanged on
Deno, Bun and Node.</p>
<p><a href="/">Home</a></p>`,
  },
};

/** Renders a small HTML page. */
function htmlPage(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>${title}</title></head>
<body>
<h1>${title}</h1>
${body}
</body>
</html>
`;
}

/** A demo page as a response. */
function demoPage(title: string, body: string, status = 200): Response {
  return new FastResponse(htmlPage(title, body), {
    status,
    headers: { "content-type": "text/html; charset=utf-8" },
  });
}

/** The demo site's routes; GET also answers HEAD, and other methods get 405 from the router. */
const DEMO_ROUTER = new Router({
  notFound: () =>
    demoPage("404 Not Found", `<p>There is nothing here. <a href="/">Home</a></p>`, 404),
})
  .get("/", () => demoPage(DEMO_PAGES["/"].title, DEMO_PAGES["/"].body))
  .get("/about", () => demoPage(DEMO_PAGES["/about"].title, DEMO_PAGES["/about"].body));

/**
 * The demo site from the original tutorial, on the {@linkcode Router}: `/`, `/about`, and a 404
 * page for anything else.
 *
 * @param request The request.
 * @param info The connection.
 * @returns The page, a 404 page, or 405 for a method other than GET and HEAD.
 *
 * @example
 * ```ts
 * import { demoHandler, serve } from "jsr:@wireserve/wireserve";
 * serve({ port: 8080 }, demoHandler);
 * ```
 */
export function demoHandler(request: Request, info: ConnInfo): Response | Promise<Response> {
  return DEMO_ROUTER.fetch(request, info);
}

interface ProcessLike {
  argv: string[];
  exitCode?: number;
  on(signal: string, listener: () => void): void;
  off(signal: string, listener: () => void): void;
}

const USAGE = `Usage: wireserve [OPTIONS] [DIR]

Serves the files in DIR. Without DIR, serves the demo site: / (hello), /about, and a 404 page.

  --port PORT        port to listen on (default 8080; 0 picks a free one)
  --host HOSTNAME    address to listen on (default 0.0.0.0)
  --unix PATH        listen on a Unix socket file instead of a port
  --workers N        run N copies on one port, one thread each (auto: one per core)
  --proxy-protocol ADDRS  expect a PROXY protocol header (v1 or v2) from these comma-separated
                     load balancer addresses or CIDRs, and take the client address from it
  --cert FILE        PEM certificate chain: serve HTTPS (with --key)
  --key FILE         PEM private key for --cert
  --no-dir-listing   answer 404 for a directory without index.html, instead of listing it
  --dotfiles         serve files and directories whose names start with a dot
  --cors             add Access-Control-Allow-Origin: * to every file response
  --spa              a single-page app: serve DIR/index.html for page URLs that match no file
  --fallback FILE    the same with another file under DIR
  --no-cache         ask the file system for every request (by default what it says about a
                     file, and a small file's contents, are trusted for a second)
  --compress         compress responses with brotli, zstd or gzip, as the client accepts
  --log              write an access log to stdout, one line per request (Combined format)
  --log-format FMT   the access log's format: common, combined or json (implies --log)
  -h, --help         show this help
`;

/** What the command line asks for. */
interface CommandLine {
  port: number;
  hostname: string;
  unixPath?: string;
  workers: number | "auto" | null;
  proxyTrusted: string[] | null;
  certFile?: string;
  keyFile?: string;
  directory?: string;
  listing: boolean;
  dotfiles: boolean;
  cors: boolean;
  fallback?: string;
  fileCache: boolean;
  compress: boolean;
  logFormat: AccessLogFormat | null;
}

/** Parses the command line; returns null after printing an error or the help. */
function parseArguments(args: string[]): CommandLine | null {
  const parsed: CommandLine = {
    port: DEFAULT_PORT,
    hostname: DEFAULT_HOSTNAME,
    listing: true,
    dotfiles: false,
    cors: false,
    fileCache: true,
    compress: false,
    logFormat: null,
    workers: null,
    proxyTrusted: null,
  };
  const fail = (message: string) => {
    console.error(`Cannot start: ${message}\n\n${USAGE}`);
    return null;
  };
  for (let i = 0; i < args.length; i++) {
    const equals = args[i].startsWith("--") ? args[i].indexOf("=") : -1;
    const flag = equals === -1 ? args[i] : args[i].slice(0, equals);
    const inline = equals === -1 ? undefined : args[i].slice(equals + 1);
    const value = () => inline ?? args[++i] ?? "";
    if (flag === "-h" || flag === "--help") {
      console.log(USAGE);
      return null;
    } else if (flag === "--port" || flag === "-p") {
      const text = value();
      parsed.port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
      if (!(parsed.port <= 65535)) {
        return fail(`--port needs a number from 0 to 65535, got ${JSON.stringify(text)}`);
      }
    } else if (flag === "--host" || flag === "--hostname") {
      parsed.hostname = value();
      if (parsed.hostname === "") return fail("--host needs an address");
    } else if (flag === "--unix") {
      parsed.unixPath = value();
      if (parsed.unixPath === "") return fail("--unix needs a path");
    } else if (flag === "--workers") {
      const text = value();
      parsed.workers = text === "auto" ? "auto" : /^[1-9]\d{0,3}$/.test(text) ? Number(text) : NaN;
      if (Number.isNaN(parsed.workers)) {
        return fail(`--workers needs a number from 1 or auto, got ${JSON.stringify(text)}`);
      }
    } else if (flag === "--proxy-protocol") {
      parsed.proxyTrusted = value().split(",").map((entry) => entry.trim()).filter(Boolean);
      if (parsed.proxyTrusted.length === 0) {
        return fail("--proxy-protocol needs the load balancers' addresses or CIDRs");
      }
    } else if (flag === "--cert") {
      parsed.certFile = value();
      if (parsed.certFile === "") return fail("--cert needs a file");
    } else if (flag === "--key") {
      parsed.keyFile = value();
      if (parsed.keyFile === "") return fail("--key needs a file");
    } else if (flag === "--no-dir-listing") {
      parsed.listing = false;
    } else if (flag === "--dotfiles") {
      parsed.dotfiles = true;
    } else if (flag === "--cors") {
      parsed.cors = true;
    } else if (flag === "--no-cache") {
      parsed.fileCache = false;
    } else if (flag === "--spa") {
      parsed.fallback = "index.html";
    } else if (flag === "--fallback") {
      parsed.fallback = value();
      if (parsed.fallback === "") return fail("--fallback needs a file under DIR");
    } else if (flag === "--compress") {
      parsed.compress = true;
    } else if (flag === "--log") {
      parsed.logFormat ??= "combined";
    } else if (flag === "--log-format") {
      const format = value();
      if (format !== "common" && format !== "combined" && format !== "json") {
        return fail(`--log-format needs common, combined or json, got ${JSON.stringify(format)}`);
      }
      parsed.logFormat = format;
    } else if (!flag.startsWith("-") && parsed.directory === undefined) {
      parsed.directory = flag;
    } else {
      return fail(`unknown argument ${JSON.stringify(args[i])}`);
    }
  }
  if ((parsed.certFile === undefined) !== (parsed.keyFile === undefined)) {
    return fail("--cert and --key go together");
  }
  if (parsed.fallback !== undefined && parsed.directory === undefined) {
    return fail("--spa and --fallback serve a file from DIR: give a DIR");
  }
  if (parsed.workers !== null && parsed.unixPath !== undefined) {
    return fail("--workers shares a TCP port; it cannot share a Unix socket");
  }
  return parsed;
}

/**
 * Runs the command line: serves until SIGINT or SIGTERM, then shuts down gracefully. With
 * `--workers`, this thread starts the pool and each worker runs this again with the same
 * arguments (`inWorker`): it serves, and leaves signals and the banner to the pool.
 */
async function main(process: ProcessLike, inWorker = false): Promise<void> {
  const parsed = parseArguments(process.argv.slice(2));
  if (parsed === null) {
    process.exitCode = process.argv.includes("--help") || process.argv.includes("-h") ? 0 : 2;
    return;
  }
  if (parsed.workers !== null && !inWorker) {
    const pool = startPool({ module: import.meta.url, count: parsed.workers }, process.argv);
    try {
      const [addr] = await pool.ready;
      console.log(`${servingLine(parsed, addr)} with ${pool.size} workers`);
    } catch (error) {
      console.error(`Cannot start: ${(error as Error).message}`);
      process.exitCode = 1;
    }
    await pool.finished;
    return;
  }
  let tls: { cert: string; key: string } | undefined;
  if (parsed.certFile !== undefined && parsed.keyFile !== undefined) {
    try {
      tls = {
        cert: readFileSync(parsed.certFile, "utf8"),
        key: readFileSync(parsed.keyFile, "utf8"),
      };
    } catch (error) {
      console.error(`Cannot start: cannot read --cert or --key: ${(error as Error).message}`);
      process.exitCode = 1;
      return;
    }
  }
  const { directory } = parsed;
  if (directory !== undefined) {
    // A directory that is not there would be served as a 404 for every request: refuse instead.
    let problem: string | undefined;
    try {
      if (!statSync(directory).isDirectory()) problem = "is not a directory";
    } catch (error) {
      const code = (error as { code?: string }).code;
      problem = code === "ENOENT"
        ? "does not exist"
        : `cannot be read: ${(error as Error).message}`;
    }
    if (problem !== undefined) {
      console.error(`Cannot start: ${JSON.stringify(directory)} ${problem}`);
      process.exitCode = 1;
      return;
    }
  }
  const served: Handler = directory === undefined ? demoHandler : (request) =>
    serveDir(request, {
      root: directory,
      listing: parsed.listing,
      dotfiles: parsed.dotfiles,
      cors: parsed.cors,
      fallback: parsed.fallback,
      cache: parsed.fileCache ? undefined : false,
    });
  const handler = parsed.compress ? compress(served) : served;
  const common = {
    ...tls,
    accessLog: parsed.logFormat ?? false,
    proxyProtocol: parsed.proxyTrusted === null ? undefined : { trusted: parsed.proxyTrusted },
  } as const;
  let server: Server<Addr>;
  try {
    server = parsed.unixPath === undefined
      ? serve({ ...common, port: parsed.port, hostname: parsed.hostname }, handler)
      : serve({ ...common, path: parsed.unixPath }, handler as Handler<ConnInfo<Addr>>);
  } catch (error) {
    console.error(`Cannot start: ${(error as Error).message}`); // a bad --proxy-protocol entry
    process.exitCode = 1;
    return;
  }
  const stop = () => {
    console.log("Shutting down…");
    server.shutdown();
  };
  if (!inWorker) {
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  }
  try {
    const addr = await server.ready;
    if (!inWorker) console.log(servingLine(parsed, addr));
  } catch (error) {
    console.error(`Cannot start: ${(error as Error).message}`); // a port in use, say
    process.exitCode = 1;
  }
  await server.finished;
  if (!inWorker) {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}

/** `Serving the demo site on http://localhost:8080/`, or `on unix:/run/app.sock`. */
function servingLine(parsed: CommandLine, addr: Addr): string {
  const what = parsed.directory === undefined ? "the demo site" : JSON.stringify(parsed.directory);
  if (addr.transport === "unix") return `Serving ${what} on unix:${addr.path}`;
  const scheme = parsed.certFile === undefined ? "http" : "https";
  const host = addr.hostname === "0.0.0.0"
    ? "localhost"
    : formatHost(addr).slice(0, -`:${addr.port}`.length);
  return `Serving ${what} on ${scheme}://${host}:${addr.port}/`;
}

/** The command line a `--workers` pool gave this worker, or null. */
const CLI_WORKER_ARGV: string[] | null = WORKER_ID === null
  ? null
  : (nodeWorkers.workerData as Record<string, unknown>)[CLI_ARGV_KEY] as string[] ?? null;

if (CLI_WORKER_ARGV !== null) {
  await main({
    ...(globalThis as unknown as { process: ProcessLike }).process,
    argv: CLI_WORKER_ARGV,
  }, true);
} else if (import.meta.main && WORKER_ID === null) {
  await main((globalThis as unknown as { process: ProcessLike }).process);
}

//#endregion
