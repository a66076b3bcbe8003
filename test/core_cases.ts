/**
 * Case tables for layer 1 of the test suite: the pure protocol core of `mod.ts`.
 *
 * Every raw input is written as a string with explicit `\r\n` and encoded as latin1 (one byte per
 * UTF-16 code unit, all below 0x100), so a table reads like the bytes on the wire. Expected results
 * are plain data: a parsed value, an {@linkcode HttpErrorCode} (errors are matched by `code` and
 * `status`, never by message), or `null` for "need more bytes".
 *
 * `test/feed.ts` runs each case through every feeding strategy (whole, split at every index, byte by
 * byte, inside a buffer of poison bytes) and requires the same result from each.
 *
 * Where the contract leaves the exact error code open, the choice made here is the strictest reading
 * of the contract and RFC 9112, and the case says why in a comment.
 *
 * @module
 */

import type { Framing, HttpErrorCode, Limits, ResponseFramingInput } from "../mod.ts";

//#region Shared expectations

/** The status each error code must carry, copied from the contract (not from `mod.ts`). `mod.ts`
 *  may define more codes; the tables only use these. */
export const EXPECTED_STATUS = {
  INVALID_REQUEST_LINE: 400,
  INVALID_METHOD: 400,
  INVALID_TARGET: 400,
  TARGET_TOO_LONG: 414,
  UNSUPPORTED_VERSION: 505,
  INVALID_HEADER: 400,
  BARE_LF: 400,
  HEAD_TOO_LARGE: 431,
  TOO_MANY_HEADERS: 431,
  MISSING_HOST: 400,
  INVALID_CONTENT_LENGTH: 400,
  CONFLICTING_FRAMING: 400,
  INVALID_TRANSFER_ENCODING: 400,
  UNSUPPORTED_TRANSFER_ENCODING: 501,
  INVALID_CHUNK: 400,
  BODY_TOO_LARGE: 413,
  UNEXPECTED_EOF: 400,
  TIMEOUT: 408,
  METHOD_NOT_IMPLEMENTED: 501,
} as const satisfies Partial<Record<HttpErrorCode, number>>;

/** An error code the contract defines, with its status in {@linkcode EXPECTED_STATUS}. */
export type ExpectedCode = keyof typeof EXPECTED_STATUS;

/** The defaults the contract documents. */
export const EXPECTED_DEFAULT_LIMITS: Readonly<Limits> = {
  maxHeadBytes: 16384,
  maxHeaderCount: 100,
  maxTargetBytes: 8192,
  maxBodyBytes: 10485760,
  maxChunkExtensionBytes: 1024,
};

const NONE: Framing = { kind: "none" };
const CHUNKED: Framing = { kind: "chunked" };
const CLOSE: Framing = { kind: "close" };
function length(bytes: number): Framing {
  return { kind: "length", length: bytes };
}

/** Repeats `text` until the result is exactly `bytes` long. */
function fill(bytes: number, text = "a"): string {
  return text.repeat(Math.ceil(bytes / text.length)).slice(0, bytes);
}

//#endregion

//#region findHeadEnd

/** A `findHeadEnd` case: the index just past the first CRLFCRLF (relative to the input's start),
 *  `-1` when there is none yet, or the error code. */
export interface FindHeadEndCase {
  readonly name: string;
  readonly raw: string;
  readonly expect: number | ExpectedCode;
}

export const FIND_HEAD_END_CASES: ReadonlyArray<FindHeadEndCase> = [
  { name: "finds the end of a minimal head", raw: "GET / HTTP/1.1\r\n\r\n", expect: 18 },
  {
    name: "finds the end of a head with fields",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n",
    expect: 33,
  },
  { name: "finds an empty head", raw: "\r\n\r\n", expect: 4 },
  { name: "returns -1 for empty input", raw: "", expect: -1 },
  { name: "returns -1 without CRLFCRLF", raw: "GET / HTTP/1.1\r\nHost: a\r\n", expect: -1 },
  { name: "returns -1 when input ends in CR", raw: "GET / HTTP/1.1\r", expect: -1 },
  { name: "returns -1 when input ends in CRLFCR", raw: "GET / HTTP/1.1\r\n\r", expect: -1 },
  {
    name: "stops at the first CRLFCRLF",
    raw: "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    expect: 18,
  },
  {
    // Bytes after the head are body bytes: a bare LF there is not a framing error.
    name: "ignores a bare LF in the body after the head",
    raw: "POST / HTTP/1.1\r\n\r\na\nb\rc",
    expect: 19,
  },
  { name: "rejects a bare LF in the request line", raw: "GET / HTTP/1.1\n\r\n", expect: "BARE_LF" },
  {
    name: "rejects a bare LF as the first byte",
    raw: "\nGET / HTTP/1.1\r\n\r\n",
    expect: "BARE_LF",
  },
  { name: "rejects a bare LF ending the head", raw: "GET / HTTP/1.1\r\n\n", expect: "BARE_LF" },
  { name: "rejects LF LF", raw: "GET / HTTP/1.1\n\n", expect: "BARE_LF" },
  {
    name: "rejects a bare LF before the head is complete",
    raw: "GET / HTTP/1.1\nHo",
    expect: "BARE_LF",
  },
  {
    name: "rejects a CR followed by a letter",
    raw: "GET / HTTP/1.1\rHost: a\r\n\r\n",
    expect: "BARE_LF",
  },
  { name: "rejects CR CR LF", raw: "GET / HTTP/1.1\r\r\n\r\n", expect: "BARE_LF" },
  { name: "rejects CRLF CR CR", raw: "GET / HTTP/1.1\r\n\r\r", expect: "BARE_LF" },
];

//#endregion

//#region parseRequestHead

/** What `parseRequestHead` must return. `size` defaults to the index just past the first CRLFCRLF
 *  in the case's raw input. */
export interface ExpectedHead {
  readonly method: string;
  readonly target: string;
  readonly version: 0 | 1;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly framing: Framing;
  readonly keepAlive: boolean;
  readonly expectContinue: boolean;
  readonly host: string;
  readonly size?: number;
}

/** A `parseRequestHead` case: the parsed head, an error code, or `null` (incomplete). */
export interface HeadCase {
  readonly name: string;
  readonly raw: string;
  readonly limits?: Partial<Limits>;
  readonly expect: ExpectedHead | ExpectedCode | null;
}

/** The head of `GET / HTTP/1.1` with `Host: a`, with `fields` replaced. */
function head(fields: Partial<ExpectedHead>): ExpectedHead {
  return {
    method: "GET",
    target: "/",
    version: 1,
    headers: [["host", "a"]],
    framing: NONE,
    keepAlive: true,
    expectContinue: false,
    host: "a",
    ...fields,
  };
}

/** `GET / HTTP/1.1` + `Host: a` + one `X` field padded so that the whole head is `bytes` long. */
function headOfSize(bytes: number): { raw: string; value: string } {
  const prefix = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  const suffix = "\r\n\r\n";
  const value = fill(bytes - prefix.length - suffix.length, "v");
  const raw = prefix + value + suffix;
  if (raw.length !== bytes) throw new Error(`Cannot build head: got ${raw.length} bytes`);
  return { raw, value };
}

/** `Host: a` followed by `count - 1` more fields `X-<i>: <i>`: `count` fields in all. */
function manyFields(count: number): { lines: string; headers: Array<[string, string]> } {
  let lines = "Host: a\r\n";
  const headers: Array<[string, string]> = [["host", "a"]];
  for (let i = 1; i < count; i++) {
    lines += `X-${i}: ${i}\r\n`;
    headers.push([`x-${i}`, String(i)]);
  }
  return { lines, headers };
}

const HEAD_64 = headOfSize(64);
const HEAD_65 = headOfSize(65);
const HEAD_16384 = headOfSize(16384);
const HEAD_16385 = headOfSize(16385);
const FIELDS_3 = manyFields(3);
const FIELDS_4 = manyFields(4);
const FIELDS_100 = manyFields(100);
const FIELDS_101 = manyFields(101);
const TARGET_16 = "/" + fill(15);
const TARGET_17 = "/" + fill(16);
const TARGET_8192 = "/" + fill(8191);
const TARGET_8193 = "/" + fill(8192);
/** The first bytes of a TLS 1.2 ClientHello record (handshake, version 3.1, length, client_hello),
 *  with no CR or LF in them: a client speaking TLS to a plain-text port. */
const TLS_CLIENT_HELLO = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" +
  "\x5a\x3b\xe1\x07\x9c\x42\x11\x8f\x20\x00\x1f\xc0\x2b\xc0\x2f\x00\x9e\xcc\xa9";

export const HEAD_CASES: ReadonlyArray<HeadCase> = [
  // ---- valid heads ----
  {
    name: "parses a minimal GET",
    raw: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: head({ size: 27 }),
  },
  {
    name: "parses a path with a query",
    raw: "GET /a/b?c=1&d=%20 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    expect: head({
      target: "/a/b?c=1&d=%20",
      headers: [["host", "example.com"]],
      host: "example.com",
    }),
  },
  {
    // RFC 9110 §9.1: the method token is case-sensitive.
    name: "keeps the method's case",
    raw: "get / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: head({ method: "get" }),
  },
  {
    // RFC 6265 §5.4: one cookie-string, pairs separated by "; ".
    name: "joins several Cookie fields with a semicolon, where the first one was (RFC 6265 §5.4)",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nAccept: */*\r\nCookie: b=2; c=3\r\n\r\n",
    expect: head({
      headers: [["host", "a"], ["cookie", "a=1; b=2; c=3"], ["accept", "*/*"]],
      size: 71,
    }),
  },
  {
    name: "accepts an extension method",
    raw: "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: head({ method: "PURGE", target: "/x" }),
  },
  {
    name: "accepts every tchar in the method",
    raw: "!#$%&'*+-.^_`|~0aZ / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: head({ method: "!#$%&'*+-.^_`|~0aZ" }),
  },
  {
    name: "parses a POST with Content-Length and leaves the body",
    raw: "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    expect: head({
      method: "POST",
      target: "/submit",
      headers: [["host", "a"], ["content-length", "5"]],
      framing: length(5),
      size: 53,
    }),
  },
  {
    // Bytes after CRLFCRLF belong to the body; the head parser must not validate them.
    name: "does not look at body bytes after the head",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\na\nb\r\x00",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "6"]],
      framing: length(6),
    }),
  },
  {
    name: "parses the head of a pipelined request only",
    raw: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: head({ target: "/1" }),
  },
  {
    name: "parses HTTP/1.0 without Host as not keep-alive",
    raw: "GET / HTTP/1.0\r\n\r\n",
    expect: head({ version: 0, headers: [], keepAlive: false, host: "" }),
  },
  {
    name: "parses HTTP/1.0 with Host",
    raw: "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    expect: head({ version: 0, keepAlive: false }),
  },
  {
    name: "keeps HTTP/1.0 alive with Connection: keep-alive",
    raw: "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    expect: head({
      version: 0,
      headers: [["connection", "keep-alive"]],
      keepAlive: true,
      host: "",
    }),
  },
  {
    name: "matches Connection: Keep-Alive case-insensitively on HTTP/1.0",
    raw: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    expect: head({
      version: 0,
      headers: [["connection", "Keep-Alive"]],
      keepAlive: true,
      host: "",
    }),
  },
  {
    name: "does not keep HTTP/1.0 alive with Connection: close",
    raw: "GET / HTTP/1.0\r\nConnection: close\r\n\r\n",
    expect: head({ version: 0, headers: [["connection", "close"]], keepAlive: false, host: "" }),
  },
  {
    name: "keeps HTTP/1.1 alive by default and with Connection: keep-alive",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["connection", "keep-alive"]], keepAlive: true }),
  },
  {
    name: "does not keep HTTP/1.1 alive with Connection: close",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["connection", "close"]], keepAlive: false }),
  },
  {
    name: "matches Connection: CLOSE case-insensitively",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["connection", "CLOSE"]], keepAlive: false }),
  },
  {
    // RFC 9110 §7.6.1: Connection is a list; "close" anywhere in it closes.
    name: "finds close inside a Connection list",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["connection", "upgrade, close"]], keepAlive: false }),
  },
  {
    name: "parses an absolute-form target",
    raw: "GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    expect: head({
      target: "http://example.com/x?y=1",
      headers: [["host", "example.com"]],
      host: "example.com",
    }),
  },
  {
    name: "parses OPTIONS *",
    raw: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: head({ method: "OPTIONS", target: "*" }),
  },
  {
    name: "trims OWS around field values",
    raw: "GET / HTTP/1.1\r\nHost:   a \t\r\nX-A:\tspaced value \t \r\nX-B:b\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["x-a", "spaced value"], ["x-b", "b"]] }),
  },
  {
    name: "keeps whitespace inside a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a  \t b\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["x", "a  \t b"]] }),
  },
  {
    name: "keeps colons inside a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a:b: c\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["x", "a:b: c"]] }),
  },
  {
    // RFC 9110 §5.5: obs-text (0x80-0xFF) is allowed in values; it is decoded as latin1.
    name: "decodes obs-text in a value as latin1",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9 \xff\x80\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["x", "caf\u00e9 \u00ff\u0080"]] }),
  },
  {
    name: "accepts empty field values",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank:   \t\r\n\r\n",
    expect: head({ headers: [["host", "a"], ["x-empty", ""], ["x-blank", ""]] }),
  },
  {
    name: "lower-cases field names and accepts every tchar",
    raw:
      "GET / HTTP/1.1\r\nHOST: a\r\nContent-Type: text/plain\r\nX-!#$%&'*+-.^_`|~09Az: t\r\n\r\n",
    expect: head({
      headers: [["host", "a"], ["content-type", "text/plain"], ["x-!#$%&'*+-.^_`|~09az", "t"]],
    }),
  },
  {
    // Common names come from a table; near misses (a tchar that differs only in bit 0x20 from a
    // letter or "-", a longer or shorter name) must not be taken for them.
    name: "lower-cases common and near-common field names exactly",
    raw: "GET / HTTP/1.1\r\nhOsT: a\r\nUSER-AGENT: u\r\nUser_Agent: v\r\nAccept^: w\r\n" +
      "Accepts: x\r\nAccep: y\r\nCONTENT-length: 0\r\n\r\n",
    expect: head({
      headers: [
        ["host", "a"],
        ["user-agent", "u"],
        ["user_agent", "v"],
        ["accept^", "w"],
        ["accepts", "x"],
        ["accep", "y"],
        ["content-length", "0"],
      ],
      framing: length(0),
    }),
  },
  {
    name: "keeps repeated fields in wire order",
    raw: "GET / HTTP/1.1\r\nAccept: a\r\nHost: a\r\nAccept: b\r\n\r\n",
    expect: head({ headers: [["accept", "a"], ["host", "a"], ["accept", "b"]] }),
  },
  {
    name: "sets expectContinue for Expect: 100-continue",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "3"], ["expect", "100-continue"]],
      framing: length(3),
      expectContinue: true,
    }),
  },
  {
    name: "matches Expect: 100-Continue case-insensitively",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "3"], ["expect", "100-Continue"]],
      framing: length(3),
      expectContinue: true,
    }),
  },
  {
    // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request.
    name: "ignores Expect: 100-continue on HTTP/1.0",
    raw: "POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    expect: head({
      method: "POST",
      version: 0,
      headers: [["content-length", "3"], ["expect", "100-continue"]],
      framing: length(3),
      keepAlive: false,
      host: "",
    }),
  },
  {
    name: "returns the Host value with a port",
    raw: "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    expect: head({ headers: [["host", "example.com:8080"]], host: "example.com:8080" }),
  },
  {
    name: "returns an IPv6 Host",
    raw: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    expect: head({ headers: [["host", "[::1]:8080"]], host: "[::1]:8080" }),
  },
  // ---- framing through parseRequestHead ----
  {
    name: "frames Content-Length: 0 as a zero length",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    // RFC 9112 §6.3 step 6: a valid Content-Length gives a length body, even 0.
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "0"]],
      framing: length(0),
    }),
  },
  {
    name: "accepts Content-Length with leading zeros",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "007"]],
      framing: length(7),
    }),
  },
  {
    name: "accepts Content-Length surrounded by OWS",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t 12 \t\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "12"]],
      framing: length(12),
    }),
  },
  {
    name: "accepts Content-Length of MAX_SAFE_INTEGER",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740991\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["content-length", "9007199254740991"]],
      framing: length(9007199254740991),
    }),
  },
  {
    name: "frames Transfer-Encoding: chunked",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["transfer-encoding", "chunked"]],
      framing: CHUNKED,
    }),
  },
  {
    name: "matches Transfer-Encoding: Chunked case-insensitively",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["transfer-encoding", "Chunked"]],
      framing: CHUNKED,
    }),
  },
  {
    // OWS around a field value is not part of it (RFC 9110 §5.5), so " chunked " is "chunked".
    name: "accepts Transfer-Encoding: chunked surrounded by OWS",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t chunked \t\r\n\r\n",
    expect: head({
      method: "POST",
      headers: [["host", "a"], ["transfer-encoding", "chunked"]],
      framing: CHUNKED,
    }),
  },
  {
    // "_" is a tchar, so this is a different (unknown) field; it must not frame the body.
    name: "treats Transfer_Encoding as an unrelated field",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
    expect: head({ method: "POST", headers: [["host", "a"], ["transfer_encoding", "chunked"]] }),
  },
  // ---- limits ----
  {
    name: "accepts maxHeaderCount fields",
    raw: `GET / HTTP/1.1\r\n${FIELDS_3.lines}\r\n`,
    limits: { maxHeaderCount: 3 },
    expect: head({ headers: FIELDS_3.headers }),
  },
  {
    name: "rejects maxHeaderCount + 1 fields",
    raw: `GET / HTTP/1.1\r\n${FIELDS_4.lines}\r\n`,
    limits: { maxHeaderCount: 3 },
    expect: "TOO_MANY_HEADERS",
  },
  {
    name: "accepts 100 fields by default",
    raw: `GET / HTTP/1.1\r\n${FIELDS_100.lines}\r\n`,
    expect: head({ headers: FIELDS_100.headers }),
  },
  {
    name: "rejects 101 fields by default",
    raw: `GET / HTTP/1.1\r\n${FIELDS_101.lines}\r\n`,
    expect: "TOO_MANY_HEADERS",
  },
  {
    name: "accepts a head of exactly maxHeadBytes",
    raw: HEAD_64.raw,
    limits: { maxHeadBytes: 64 },
    expect: head({ headers: [["host", "a"], ["x", HEAD_64.value]], size: 64 }),
  },
  {
    // The limit is on the head only: body bytes after it do not count.
    name: "accepts a head of exactly maxHeadBytes followed by body bytes",
    raw: HEAD_64.raw + "body bytes that are not part of the head",
    limits: { maxHeadBytes: 64 },
    expect: head({ headers: [["host", "a"], ["x", HEAD_64.value]], size: 64 }),
  },
  {
    name: "rejects a head of maxHeadBytes + 1",
    raw: HEAD_65.raw,
    limits: { maxHeadBytes: 64 },
    expect: "HEAD_TOO_LARGE",
  },
  {
    // Contract: "more than maxHeadBytes bytes without a head end -> 431" even before CRLFCRLF.
    name: "rejects maxHeadBytes + 1 bytes without a head end",
    raw: HEAD_65.raw.slice(0, 60) + "vvvvv",
    limits: { maxHeadBytes: 64 },
    expect: "HEAD_TOO_LARGE",
  },
  {
    // 63 bytes ending in CRLFCR: one more LF would make a head of exactly 64 bytes.
    name: "returns null one byte short of a head of exactly maxHeadBytes",
    raw: HEAD_64.raw.slice(0, 63),
    limits: { maxHeadBytes: 64 },
    expect: null,
  },
  {
    name: "accepts a head of 16384 bytes by default",
    raw: HEAD_16384.raw,
    expect: head({ headers: [["host", "a"], ["x", HEAD_16384.value]], size: 16384 }),
  },
  {
    name: "rejects a head of 16385 bytes by default",
    raw: HEAD_16385.raw,
    expect: "HEAD_TOO_LARGE",
  },
  {
    name: "accepts a target of exactly maxTargetBytes",
    raw: `GET ${TARGET_16} HTTP/1.1\r\nHost: a\r\n\r\n`,
    limits: { maxTargetBytes: 16 },
    expect: head({ target: TARGET_16 }),
  },
  {
    name: "rejects a target of maxTargetBytes + 1",
    raw: `GET ${TARGET_17} HTTP/1.1\r\nHost: a\r\n\r\n`,
    limits: { maxTargetBytes: 16 },
    expect: "TARGET_TOO_LONG",
  },
  {
    // Contract: a target already over maxTargetBytes is rejected before the line ends.
    name: "rejects a target over maxTargetBytes before the line ends",
    raw: `GET ${TARGET_17}aaaa`,
    limits: { maxTargetBytes: 16 },
    expect: "TARGET_TOO_LONG",
  },
  {
    name: "accepts a target of 8192 bytes by default",
    raw: `GET ${TARGET_8192} HTTP/1.1\r\nHost: a\r\n\r\n`,
    expect: head({ target: TARGET_8192 }),
  },
  {
    name: "rejects a target of 8193 bytes by default",
    raw: `GET ${TARGET_8193} HTTP/1.1\r\nHost: a\r\n\r\n`,
    expect: "TARGET_TOO_LONG",
  },
  // ---- incomplete ----
  { name: "returns null for empty input", raw: "", expect: null },
  { name: "returns null for a partial method", raw: "GE", expect: null },
  { name: "returns null for a partial request line", raw: "GET /index.html HTT", expect: null },
  {
    name: "returns null without the final CRLF",
    raw: "GET / HTTP/1.1\r\nHost: a\r\n",
    expect: null,
  },
  {
    name: "returns null when input ends in CRLFCR",
    raw: "GET / HTTP/1.1\r\nHost: a\r\n\r",
    expect: null,
  },
  // ---- request line ----
  {
    // RFC 9112 §2.3: HTTP-name is case-sensitive "HTTP".
    name: "rejects lowercase http/1.1",
    raw: "GET / http/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects HTTP/2.0 with 505",
    raw: "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    expect: "UNSUPPORTED_VERSION",
  },
  {
    name: "rejects HTTP/1.2 with 505",
    raw: "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    expect: "UNSUPPORTED_VERSION",
  },
  {
    name: "rejects HTTP/3.0 with 505",
    raw: "GET / HTTP/3.0\r\nHost: a\r\n\r\n",
    expect: "UNSUPPORTED_VERSION",
  },
  {
    // Syntactically HTTP/D.D, so the contract says 505 rather than a malformed line.
    name: "rejects an explicit HTTP/0.9 version with 505",
    raw: "GET / HTTP/0.9\r\nHost: a\r\n\r\n",
    expect: "UNSUPPORTED_VERSION",
  },
  {
    name: "rejects the HTTP/2 connection preface with 505",
    raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    expect: "UNSUPPORTED_VERSION",
  },
  {
    name: "rejects an HTTP/0.9 request line",
    raw: "GET /\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects an empty version",
    raw: "GET / \r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects a two-digit minor version",
    raw: "GET / HTTP/1.10\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects a version without a minor",
    raw: "GET / HTTP/1\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects a non-digit version",
    raw: "GET / HTTP/a.b\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects HTTPS/1.1",
    raw: "GET / HTTPS/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects two spaces before the target",
    raw: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    // Contract: "two spaces" is a malformed request line, not a bad target.
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects two spaces before the version",
    raw: "GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects a space after the version",
    raw: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    // RFC 9112 §3: the separator is exactly one SP. A tab right after the method is a byte of the
    // method, and HTAB is not a tchar, so the method is not a token.
    name: "rejects a tab after the method",
    raw: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_METHOD",
  },
  {
    // A tab where the separating SP belongs is a malformed request line, like two spaces. (A tab
    // after the method is INVALID_METHOD instead: there it is a byte of a method that is no token.)
    name: "rejects a tab after the target",
    raw: "GET /\tHTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_REQUEST_LINE",
  },
  {
    name: "rejects NUL in the method",
    raw: "G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_METHOD",
  },
  {
    name: "rejects a CTL in the method",
    raw: "GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_METHOD",
  },
  {
    name: "rejects DEL in the method",
    raw: "GE\x7fT / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_METHOD",
  },
  {
    name: "rejects a delimiter in the method",
    raw: "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_METHOD",
  },
  {
    name: "rejects a non-ASCII byte in the method",
    raw: "G\xc9T / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_METHOD",
  },
  {
    // Contract: bad method bytes are rejected before the head is complete.
    name: "rejects NUL in the method before the line ends",
    raw: "G\x00",
    expect: "INVALID_METHOD",
  },
  {
    name: "rejects a TLS ClientHello before any CRLF",
    raw: TLS_CLIENT_HELLO,
    expect: "INVALID_METHOD",
  },
  { name: "rejects a TLS ClientHello from its first byte", raw: "\x16", expect: "INVALID_METHOD" },
  // ---- target ----
  {
    name: "rejects # in the target",
    raw: "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  {
    name: "rejects a backslash in the target",
    raw: "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  {
    name: "rejects a non-ASCII byte in the target",
    raw: "GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  {
    name: "rejects NUL in the target",
    raw: "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  {
    name: "rejects a CTL in the target",
    raw: "GET /a\x1bb HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  {
    name: "rejects DEL in the target",
    raw: "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  {
    // Neither origin-form ("/..."), absolute-form ("scheme:...") nor "*".
    name: "rejects a target that is not origin-form, absolute-form or *",
    raw: "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "INVALID_TARGET",
  },
  // ---- header fields ----
  {
    name: "rejects space before colon",
    raw: "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects tab before colon",
    raw: "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects an empty field name",
    raw: "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a field line without colon",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nXyz\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a space inside a field name",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects NUL in a field name",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a delimiter in a field name",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX(Y): b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a non-ASCII byte in a field name",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX\xe9: b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects NUL in a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a CTL in a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects VT in a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects DEL in a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    // RFC 9112 §5.2: obs-fold is rejected (400) by a server that does not replace it.
    name: "rejects obs-fold with a space",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects obs-fold with a tab",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    // RFC 9112 §2.2: whitespace between the start line and the first field line.
    name: "rejects whitespace before the first field line",
    raw: "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  // ---- line endings ----
  {
    name: "rejects a bare LF after the request line",
    raw: "GET / HTTP/1.1\nHost: a\r\n\r\n",
    expect: "BARE_LF",
  },
  {
    name: "rejects a bare LF after a field line",
    raw: "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    expect: "BARE_LF",
  },
  {
    name: "rejects a bare LF ending the head",
    raw: "GET / HTTP/1.1\r\nHost: a\r\n\n",
    expect: "BARE_LF",
  },
  {
    name: "rejects a head with only LF line endings",
    raw: "GET / HTTP/1.1\nHost: a\n\n",
    expect: "BARE_LF",
  },
  {
    // The contract calls every LF without CR a BARE_LF, also one inside a value.
    name: "rejects a bare LF inside a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n",
    expect: "BARE_LF",
  },
  {
    // Contract: a bare LF is rejected before the head is complete.
    name: "rejects a bare LF before the head is complete",
    raw: "GET / HTTP/1.1\nHo",
    expect: "BARE_LF",
  },
  {
    name: "rejects a bare CR after the request line",
    raw: "GET / HTTP/1.1\rHost: a\r\n\r\n",
    expect: "BARE_LF",
  },
  {
    name: "rejects a bare CR inside a field value",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    expect: "BARE_LF",
  },
  {
    name: "rejects CR CR LF ending a field line",
    raw: "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
    expect: "BARE_LF",
  },
  // ---- Host ----
  {
    name: "rejects HTTP/1.1 without Host",
    raw: "GET / HTTP/1.1\r\nX: a\r\n\r\n",
    expect: "MISSING_HOST",
  },
  {
    name: "rejects two Host fields",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    expect: "MISSING_HOST",
  },
  {
    name: "rejects two identical Host fields",
    raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    expect: "MISSING_HOST",
  },
  {
    name: "rejects two Host fields on HTTP/1.0",
    raw: "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    expect: "MISSING_HOST",
  },
  {
    // An empty Host is only meant for targets without an authority (RFC 9112 §3.2); an "http" URI
    // with an empty host is invalid and MUST be rejected (RFC 9110 §4.2.1), so 400 is the strict
    // reading of "an invalid Host value".
    name: "rejects an empty Host on HTTP/1.1",
    raw: "GET / HTTP/1.1\r\nHost:\r\n\r\n",
    expect: "MISSING_HOST",
  },
  {
    // RFC 9110 §7.2 Host = uri-host [":" port]; a space is not part of any uri-host.
    name: "rejects a Host value with a space",
    raw: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    expect: "MISSING_HOST",
  },
  // ---- Content-Length ----
  ...[
    ["rejects Content-Length with +", "+5"],
    ["rejects Content-Length with -", "-5"],
    ["rejects Content-Length with a space inside", "5 5"],
    ["rejects hexadecimal Content-Length", "0x5"],
    ["rejects Content-Length with a trailing letter", "5abc"],
    ["rejects a Content-Length list", "1,1"],
    ["rejects a Content-Length list with OWS", "1, 1"],
    ["rejects an empty Content-Length", ""],
    ["rejects Content-Length of MAX_SAFE_INTEGER + 1", "9007199254740992"],
    ["rejects a 20-digit Content-Length", "99999999999999999999"],
  ].map(([name, value]): HeadCase => ({
    name,
    raw: `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${value}\r\n\r\n`,
    expect: "INVALID_CONTENT_LENGTH",
  })),
  {
    // RFC 9112 §6.3 step 5 allows folding identical values; the contract forbids any duplicate.
    name: "rejects two identical Content-Length fields",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    expect: "INVALID_CONTENT_LENGTH",
  },
  {
    name: "rejects two different Content-Length fields",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    expect: "INVALID_CONTENT_LENGTH",
  },
  // ---- Transfer-Encoding ----
  {
    name: "rejects gzip, chunked with 501",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    expect: "UNSUPPORTED_TRANSFER_ENCODING",
  },
  {
    // RFC 9112 §6.3 step 4: final coding not chunked in a request -> 400 and close.
    name: "rejects chunked, gzip",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9112 §6.1: a sender MUST NOT apply chunked more than once.
    name: "rejects chunked, chunked",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects chunked in two Transfer-Encoding fields",
    raw:
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // Two fields are one list (RFC 9110 §5.3): "gzip, chunked".
    name: "rejects gzip then chunked in two Transfer-Encoding fields with 501",
    raw:
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    expect: "UNSUPPORTED_TRANSFER_ENCODING",
  },
  {
    name: "rejects Transfer-Encoding: gzip alone",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects Transfer-Encoding: identity",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // Smuggling: a coding that only contains "chunked" is not chunked.
    name: "rejects Transfer-Encoding: xchunked",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects Transfer-Encoding: chun ked",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9112 §7.1 defines no parameters for chunked; the final coding is not plain "chunked", so
    // the strict reading is a bad Transfer-Encoding (400), not a supported one.
    name: "rejects Transfer-Encoding: chunked;q=1",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // An empty Transfer-Encoding has no final coding, so its final coding is not chunked.
    name: "rejects an empty Transfer-Encoding",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // Smuggling: VT is a CTL, so the field value itself is invalid before framing is considered.
    name: "rejects Transfer-Encoding: chunked followed by VT",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects Transfer-Encoding: VT then chunked",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    // Smuggling: a proxy that ignores the space might see Transfer-Encoding; we reject the line.
    name: "rejects Transfer-Encoding with space before colon",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects Transfer-Encoding folded onto the next line",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    // RFC 9112 §6.1: a server MAY reject TE with CL as a smuggling attempt; the contract does.
    name: "rejects Transfer-Encoding with Content-Length",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    expect: "CONFLICTING_FRAMING",
  },
  {
    name: "rejects Content-Length with Transfer-Encoding",
    raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    expect: "CONFLICTING_FRAMING",
  },
  {
    // RFC 9112 §6.1: TE in an HTTP/1.0 message means the framing is faulty.
    name: "rejects Transfer-Encoding on HTTP/1.0",
    raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    expect: "CONFLICTING_FRAMING",
  },
];

//#endregion

//#region parseContentLength

export interface ContentLengthCase {
  readonly name: string;
  readonly value: string;
  readonly expect: number | ExpectedCode;
}

export const CONTENT_LENGTH_CASES: ReadonlyArray<ContentLengthCase> = [
  { name: "parses 0", value: "0", expect: 0 },
  { name: "parses 5", value: "5", expect: 5 },
  { name: "parses leading zeros", value: "007", expect: 7 },
  { name: "parses a long run of zeros", value: "00000000000000000000000", expect: 0 },
  { name: "parses MAX_SAFE_INTEGER", value: "9007199254740991", expect: 9007199254740991 },
  {
    name: "rejects MAX_SAFE_INTEGER + 1",
    value: "9007199254740992",
    expect: "INVALID_CONTENT_LENGTH",
  },
  { name: "rejects 20 digits", value: "99999999999999999999", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects an empty value", value: "", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects +", value: "+5", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects -", value: "-5", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects -0", value: "-0", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a space inside", value: "5 5", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a leading space", value: " 5", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a trailing space", value: "5 ", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects hexadecimal", value: "0x5", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a trailing letter", value: "5abc", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a decimal point", value: "5.0", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects an exponent", value: "1e3", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a list", value: "1,1", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects a list with OWS", value: "1, 1", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects non-ASCII digits", value: "\u0663", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects fullwidth digits", value: "\uff15", expect: "INVALID_CONTENT_LENGTH" },
  { name: "rejects Infinity", value: "Infinity", expect: "INVALID_CONTENT_LENGTH" },
];

//#endregion

//#region requestFraming

export interface RequestFramingCase {
  readonly name: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly version: 0 | 1;
  readonly expect: Framing | ExpectedCode;
}

export const REQUEST_FRAMING_CASES: ReadonlyArray<RequestFramingCase> = [
  {
    // RFC 9110 §5.6.1: a recipient MUST parse and ignore a reasonable number of empty list elements.
    name: "ignores empty list elements in Transfer-Encoding",
    headers: [["transfer-encoding", ", chunked,"]],
    version: 1,
    expect: CHUNKED,
  },
  {
    // Contract: a coding that is not a token is a bad Transfer-Encoding (400), not an unknown one.
    name: "rejects a coding that is not a token",
    headers: [["transfer-encoding", "g(zip, chunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0xA0 (NBSP) after the coding is part of it.
    name: "rejects 0xA0 after chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "chunked\xA0"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0xA0 (NBSP) before the coding is part of it.
    name: "rejects 0xA0 before chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "\xA0chunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0x0B (VT) after the coding is part of it.
    name: "rejects 0x0B after chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "chunked\x0B"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0x0B (VT) before the coding is part of it.
    name: "rejects 0x0B before chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "\x0Bchunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0x0C (FF) after the coding is part of it.
    name: "rejects 0x0C after chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "chunked\x0C"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0x0C (FF) before the coding is part of it.
    name: "rejects 0x0C before chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "\x0Cchunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0x85 (NEL) after the coding is part of it.
    name: "rejects 0x85 after chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "chunked\x85"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // RFC 9110 §5.6.3: OWS is SP and HTAB only; a 0x85 (NEL) before the coding is part of it.
    name: "rejects 0x85 before chunked (OWS is SP and HTAB only)",
    headers: [["transfer-encoding", "\x85chunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  { name: "returns none without framing fields", headers: [], version: 1, expect: NONE },
  {
    name: "ignores unrelated fields",
    headers: [["host", "a"], ["content-type", "text/plain"], ["transfer_encoding", "chunked"]],
    version: 1,
    expect: NONE,
  },
  {
    name: "returns a length for Content-Length",
    headers: [["content-length", "5"]],
    version: 1,
    expect: length(5),
  },
  {
    name: "returns length 0 for Content-Length: 0",
    headers: [["content-length", "0"]],
    version: 1,
    expect: length(0),
  },
  {
    name: "returns a length on HTTP/1.0",
    headers: [["content-length", "5"]],
    version: 0,
    expect: length(5),
  },
  {
    name: "returns chunked for chunked",
    headers: [["transfer-encoding", "chunked"]],
    version: 1,
    expect: CHUNKED,
  },
  {
    name: "matches CHUNKED case-insensitively",
    headers: [["transfer-encoding", "CHUNKED"]],
    version: 1,
    expect: CHUNKED,
  },
  {
    name: "rejects gzip, chunked with 501",
    headers: [["transfer-encoding", "gzip, chunked"]],
    version: 1,
    expect: "UNSUPPORTED_TRANSFER_ENCODING",
  },
  {
    name: "rejects gzip,chunked without OWS with 501",
    headers: [["transfer-encoding", "gzip,chunked"]],
    version: 1,
    expect: "UNSUPPORTED_TRANSFER_ENCODING",
  },
  {
    name: "rejects deflate, gzip, chunked with 501",
    headers: [["transfer-encoding", "deflate, gzip, chunked"]],
    version: 1,
    expect: "UNSUPPORTED_TRANSFER_ENCODING",
  },
  {
    name: "rejects gzip and chunked in two fields with 501",
    headers: [["transfer-encoding", "gzip"], ["transfer-encoding", "chunked"]],
    version: 1,
    expect: "UNSUPPORTED_TRANSFER_ENCODING",
  },
  {
    name: "rejects chunked, gzip",
    headers: [["transfer-encoding", "chunked, gzip"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects chunked, chunked",
    headers: [["transfer-encoding", "chunked, chunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects chunked in two fields",
    headers: [["transfer-encoding", "chunked"], ["transfer-encoding", "chunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects gzip alone",
    headers: [["transfer-encoding", "gzip"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects xchunked",
    headers: [["transfer-encoding", "xchunked"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects chunkedx",
    headers: [["transfer-encoding", "chunkedx"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    // See the parseRequestHead case: chunked has no parameters, so this is not plain chunked.
    name: "rejects chunked;q=1",
    headers: [["transfer-encoding", "chunked;q=1"]],
    version: 1,
    expect: "INVALID_TRANSFER_ENCODING",
  },
  {
    name: "rejects Transfer-Encoding with Content-Length",
    headers: [["transfer-encoding", "chunked"], ["content-length", "5"]],
    version: 1,
    expect: "CONFLICTING_FRAMING",
  },
  {
    name: "rejects Content-Length with Transfer-Encoding",
    headers: [["content-length", "5"], ["transfer-encoding", "chunked"]],
    version: 1,
    expect: "CONFLICTING_FRAMING",
  },
  {
    name: "rejects Transfer-Encoding on HTTP/1.0",
    headers: [["transfer-encoding", "chunked"]],
    version: 0,
    expect: "CONFLICTING_FRAMING",
  },
  {
    name: "rejects two identical Content-Length fields",
    headers: [["content-length", "5"], ["content-length", "5"]],
    version: 1,
    expect: "INVALID_CONTENT_LENGTH",
  },
  {
    name: "rejects a Content-Length list",
    headers: [["content-length", "5, 5"]],
    version: 1,
    expect: "INVALID_CONTENT_LENGTH",
  },
  {
    name: "rejects a signed Content-Length",
    headers: [["content-length", "+5"]],
    version: 1,
    expect: "INVALID_CONTENT_LENGTH",
  },
  {
    name: "rejects a Content-Length over MAX_SAFE_INTEGER",
    headers: [["content-length", "9007199254740992"]],
    version: 1,
    expect: "INVALID_CONTENT_LENGTH",
  },
];

//#endregion

//#region ChunkedDecoder

/** What a `ChunkedDecoder` must produce once the whole input was presented: the decoded body
 *  (latin1), the trailers, and the bytes it must leave unconsumed after the terminator. */
export interface ExpectedChunked {
  readonly body: string;
  readonly trailers?: ReadonlyArray<readonly [string, string]>;
  readonly rest?: string;
}

/** A `ChunkedDecoder` case: the decoded result, an error code, or `null` (not done after all
 *  bytes were presented, and no error). */
export interface ChunkedCase {
  readonly name: string;
  readonly raw: string;
  readonly limits?: Partial<Limits>;
  readonly expect: ExpectedChunked | ExpectedCode | null;
}

/** 4096 bytes covering every byte value, including CR, LF and NUL. */
const BINARY_4096 = Array.from({ length: 4096 }, (_, i) => String.fromCharCode(i % 256)).join("");

export const CHUNKED_CASES: ReadonlyArray<ChunkedCase> = [
  { name: "decodes a single chunk", raw: "5\r\nhello\r\n0\r\n\r\n", expect: { body: "hello" } },
  { name: "decodes an empty body", raw: "0\r\n\r\n", expect: { body: "" } },
  {
    name: "decodes several chunks",
    raw: "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
    expect: { body: "hello world" },
  },
  {
    name: "decodes an uppercase hex size",
    raw: "A\r\n0123456789\r\n0\r\n\r\n",
    expect: { body: "0123456789" },
  },
  {
    name: "decodes a lowercase hex size",
    raw: "a\r\n0123456789\r\n0\r\n\r\n",
    expect: { body: "0123456789" },
  },
  {
    name: "decodes a mixed-case hex size",
    raw: "1F\r\n" + fill(31, "x") + "\r\n0\r\n\r\n",
    expect: { body: fill(31, "x") },
  },
  {
    name: "accepts a size of 16 hex digits",
    raw: "0000000000000005\r\nhello\r\n0\r\n\r\n",
    expect: { body: "hello" },
  },
  {
    name: "decodes a 4096-byte chunk of every byte value",
    raw: "1000\r\n" + BINARY_4096 + "\r\n0\r\n\r\n",
    expect: { body: BINARY_4096 },
  },
  {
    name: "does not interpret framing bytes inside chunk data",
    raw: "5\r\n0\r\n\r\n\r\n0\r\n\r\n",
    expect: { body: "0\r\n\r\n" },
  },
  // ---- extensions ----
  {
    name: "ignores a chunk extension",
    raw: "5;name=value\r\nhello\r\n0\r\n\r\n",
    expect: { body: "hello" },
  },
  {
    name: "ignores a chunk extension without value",
    raw: "5;name\r\nhello\r\n0\r\n\r\n",
    expect: { body: "hello" },
  },
  {
    name: "ignores several chunk extensions",
    raw: '5;a;b=c;d="e"\r\nhello\r\n0\r\n\r\n',
    expect: { body: "hello" },
  },
  {
    name: "ignores a quoted chunk extension with ; and spaces",
    raw: '5;name="quoted ; value"\r\nhello\r\n0\r\n\r\n',
    expect: { body: "hello" },
  },
  {
    name: "ignores an extension on the last chunk",
    raw: "5\r\nhello\r\n0;final=1\r\n\r\n",
    expect: { body: "hello" },
  },
  {
    // chunk-ext is everything after the size, ";" included (RFC 9112 §7.1.1): ";abcdefg" is 8 bytes.
    name: "accepts an extension of exactly maxChunkExtensionBytes",
    raw: "5;abcdefg\r\nhello\r\n0\r\n\r\n",
    limits: { maxChunkExtensionBytes: 8 },
    expect: { body: "hello" },
  },
  {
    name: "rejects an extension of maxChunkExtensionBytes + 1",
    raw: "5;abcdefgh\r\nhello\r\n0\r\n\r\n",
    limits: { maxChunkExtensionBytes: 8 },
    expect: "INVALID_CHUNK",
  },
  {
    name: "rejects an extension over 1024 bytes by default",
    raw: "5;" + fill(1024, "e") + "\r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    name: "rejects NUL in an extension",
    raw: "5;a\x00b\r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    // Contract: "bad extension" -> INVALID_CHUNK; chunk-ext-name is a token, so it cannot be empty.
    name: "rejects an extension with an empty name",
    raw: "5;=v\r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    name: "rejects an unterminated quoted extension",
    raw: '5;a="v\r\nhello\r\n0\r\n\r\n',
    expect: "INVALID_CHUNK",
  },
  { name: "rejects a bare LF in an extension", raw: "5;a\nhello\r\n0\r\n\r\n", expect: "BARE_LF" },
  // ---- size line ----
  {
    name: "rejects a size of 17 hex digits",
    raw: "00000000000000005\r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    // 16 digits, but over MAX_SAFE_INTEGER: it cannot be counted exactly.
    name: "rejects a size that overflows",
    raw: "FFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  { name: "rejects a non-hex size", raw: "g\r\nhello\r\n0\r\n\r\n", expect: "INVALID_CHUNK" },
  { name: "rejects a missing size", raw: "\r\nhello\r\n0\r\n\r\n", expect: "INVALID_CHUNK" },
  { name: "rejects a 0x prefix", raw: "0x5\r\nhello\r\n0\r\n\r\n", expect: "INVALID_CHUNK" },
  { name: "rejects a signed size", raw: "+5\r\nhello\r\n0\r\n\r\n", expect: "INVALID_CHUNK" },
  {
    name: "rejects a space before the size",
    raw: " 5\r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    // chunk = chunk-size [ chunk-ext ] CRLF: whitespace is only allowed before a ";" (BWS).
    name: "rejects a space after the size",
    raw: "5 \r\nhello\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  { name: "rejects a bare LF after the size", raw: "5\nhello\r\n0\r\n\r\n", expect: "BARE_LF" },
  { name: "rejects a bare CR after the size", raw: "5\rhello\r\n0\r\n\r\n", expect: "BARE_LF" },
  // ---- after the data ----
  {
    name: "rejects missing CRLF after data",
    raw: "3\r\nabcX\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    name: "rejects data longer than the size",
    raw: "3\r\nabcd\r\n0\r\n\r\n",
    expect: "INVALID_CHUNK",
  },
  {
    // Contract: an LF not preceded by CR in chunk framing is BARE_LF.
    name: "rejects a bare LF after data",
    raw: "3\r\nabc\n0\r\n\r\n",
    expect: "BARE_LF",
  },
  {
    // Contract: a CR not followed by LF in chunk framing is BARE_LF.
    name: "rejects a bare CR after data",
    raw: "3\r\nabc\rX0\r\n\r\n",
    expect: "BARE_LF",
  },
  { name: "rejects a bare LF after the last chunk", raw: "3\r\nabc\r\n0\n\r\n", expect: "BARE_LF" },
  { name: "rejects a bare LF ending the trailer section", raw: "0\r\n\n", expect: "BARE_LF" },
  // ---- trailers ----
  {
    name: "parses trailers with lower-cased names",
    raw: "3\r\nabc\r\n0\r\nX-Checksum: abc\r\nOther-Field:  1 \t\r\n\r\n",
    expect: { body: "abc", trailers: [["x-checksum", "abc"], ["other-field", "1"]] },
  },
  {
    name: "parses trailers after an empty body",
    raw: "0\r\nExpires: never\r\n\r\n",
    expect: { body: "", trailers: [["expires", "never"]] },
  },
  {
    name: "accepts maxHeaderCount trailers",
    raw: "0\r\nA: 1\r\nB: 2\r\n\r\n",
    limits: { maxHeaderCount: 2 },
    expect: { body: "", trailers: [["a", "1"], ["b", "2"]] },
  },
  {
    name: "rejects maxHeaderCount + 1 trailers",
    raw: "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
    limits: { maxHeaderCount: 2 },
    expect: "TOO_MANY_HEADERS",
  },
  {
    name: "rejects a trailer section over maxHeadBytes",
    raw: "0\r\nX: " + fill(100, "t") + "\r\n\r\n",
    limits: { maxHeadBytes: 32 },
    expect: "HEAD_TOO_LARGE",
  },
  {
    name: "rejects a trailer with a space in its name",
    raw: "0\r\nBad Name: x\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a trailer with space before colon",
    raw: "0\r\nX : y\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects a trailer with an empty name",
    raw: "0\r\n: y\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  { name: "rejects a trailer without colon", raw: "0\r\nXyz\r\n\r\n", expect: "INVALID_HEADER" },
  {
    name: "rejects NUL in a trailer value",
    raw: "0\r\nX: a\x00b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  {
    name: "rejects an obs-folded trailer",
    raw: "0\r\nX: a\r\n b\r\n\r\n",
    expect: "INVALID_HEADER",
  },
  { name: "rejects a bare LF in a trailer", raw: "0\r\nX: a\nY: b\r\n\r\n", expect: "BARE_LF" },
  // ---- what follows the body ----
  {
    name: "leaves a pipelined request unconsumed",
    raw: "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: { body: "hello", rest: "GET / HTTP/1.1\r\nHost: a\r\n\r\n" },
  },
  {
    name: "leaves a second chunked body unconsumed",
    raw: "3\r\nabc\r\n0\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
    expect: { body: "abc", rest: "3\r\nxyz\r\n0\r\n\r\n" },
  },
  {
    name: "leaves bytes after trailers unconsumed",
    raw: "0\r\nA: b\r\n\r\nNEXT",
    expect: { body: "", trailers: [["a", "b"]], rest: "NEXT" },
  },
  {
    // The next request is not the decoder's business, even if it is garbage.
    name: "leaves invalid bytes after the terminator unconsumed",
    raw: "0\r\n\r\n\n\x00\r",
    expect: { body: "", rest: "\n\x00\r" },
  },
  // ---- incomplete ----
  { name: "is not done on empty input", raw: "", expect: null },
  { name: "is not done inside chunk data", raw: "5\r\nhel", expect: null },
  { name: "is not done after a chunk", raw: "5\r\nhello\r\n", expect: null },
  { name: "is not done after the last-chunk line", raw: "5\r\nhello\r\n0\r\n", expect: null },
  { name: "is not done before the final LF", raw: "0\r\n\r", expect: null },
  { name: "is not done inside trailers", raw: "0\r\nX: a\r\n", expect: null },
];

//#endregion

//#region responseFraming

type FramingInput = ResponseFramingInput;

export interface ResponseFramingCase {
  readonly name: string;
  readonly input: FramingInput;
  readonly expect: { framing: Framing; close: boolean };
}

function response(fields: Partial<FramingInput>): FramingInput {
  return {
    method: "GET",
    version: 1,
    keepAlive: true,
    status: 200,
    bodyLength: 5,
    ...fields,
  };
}

export const RESPONSE_FRAMING_CASES: ReadonlyArray<ResponseFramingCase> = [
  {
    name: "uses a known length",
    input: response({}),
    expect: { framing: length(5), close: false },
  },
  {
    name: "uses a known length of 0",
    input: response({ bodyLength: 0 }),
    expect: { framing: length(0), close: false },
  },
  {
    name: "uses chunked for an unknown length on HTTP/1.1",
    input: response({ bodyLength: null }),
    expect: { framing: CHUNKED, close: false },
  },
  {
    // The contract says unknown length on 1.1 is chunked; closing does not change that.
    name: "uses chunked for an unknown length on HTTP/1.1 without keep-alive",
    input: response({ bodyLength: null, keepAlive: false }),
    expect: { framing: CHUNKED, close: true },
  },
  {
    name: "closes for an unknown length on HTTP/1.0",
    input: response({ version: 0, bodyLength: null }),
    expect: { framing: CLOSE, close: true },
  },
  {
    name: "closes for an unknown length on HTTP/1.0 without keep-alive",
    input: response({ version: 0, keepAlive: false, bodyLength: null }),
    expect: { framing: CLOSE, close: true },
  },
  {
    name: "keeps a known length on HTTP/1.0 keep-alive",
    input: response({ version: 0 }),
    expect: { framing: length(5), close: false },
  },
  {
    name: "closes a known length without keep-alive",
    input: response({ keepAlive: false }),
    expect: { framing: length(5), close: true },
  },
  {
    name: "closes a known length on HTTP/1.0 without keep-alive",
    input: response({ version: 0, keepAlive: false }),
    expect: { framing: length(5), close: true },
  },
  {
    // A Response without a body is an empty body: Content-Length: 0 keeps the connection usable.
    name: "uses length 0 when there is no body",
    input: response({ bodyLength: 0 }),
    expect: { framing: length(0), close: false },
  },
  {
    name: "uses none for HEAD",
    input: response({ method: "HEAD" }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "uses none for HEAD with an unknown length",
    input: response({ method: "HEAD", bodyLength: null }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "uses none for HEAD on HTTP/1.0 with an unknown length",
    input: response({ method: "HEAD", version: 0, keepAlive: true, bodyLength: null }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "closes HEAD without keep-alive",
    input: response({ method: "HEAD", keepAlive: false }),
    expect: { framing: NONE, close: true },
  },
  {
    name: "uses none for 204",
    input: response({ status: 204, bodyLength: null }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "uses none for 204 even with a body",
    input: response({ status: 204 }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "uses none for 304",
    input: response({ status: 304, bodyLength: 10 }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "uses none for 304 with an unknown length on HTTP/1.0",
    input: response({ status: 304, version: 0, bodyLength: null }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "uses none for 1xx",
    input: response({ status: 103, bodyLength: null }),
    expect: { framing: NONE, close: false },
  },
  {
    name: "closes 204 without keep-alive",
    input: response({ status: 204, keepAlive: false, bodyLength: null }),
    expect: { framing: NONE, close: true },
  },
];

//#endregion
