/**
 * Tests for the draft of issue 3 (drafts/handlers.ts): the router and the static file server.
 *
 * - pure functions, table-driven: `parseRange` (RFC 9110 §14 examples), `evaluatePreconditions`
 *   and `evaluateIfRange` (RFC 9110 §13), `parseHttpDate` (§5.6.7), `negotiateEncoding`,
 *   `contentTypeFor`, `decodeRequestPath` (every traversal spelling);
 * - the router through `router.fetch`, then under wireserve's `serve`;
 * - the static file server end to end: real files in a temp directory, served by wireserve on
 *   127.0.0.1, asked with raw `node:net` sockets (fetch normalises `..` and decodes bodies) and
 *   `fetch`.
 *
 * Once the draft is pasted into mod.ts, the imports from "../mod.ts" come from "../mod.ts".
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { serve } from "../mod.ts";
import type { ConnInfo, Handler } from "../mod.ts";
import {
  contentTypeFor,
  decodeRequestPath,
  evaluateIfRange,
  evaluatePreconditions,
  FileCache,
  negotiateEncoding,
  parseHttpDate,
  parseRange,
  Router,
  serveDir,
  serveFile,
} from "../mod.ts";
import type { DecodedPath, RangeResult, ServeDirOptions } from "../mod.ts";
import {
  bytesOf,
  delay,
  ManualClock,
  maskDate,
  memoryServer,
  nativeServe,
  rawExchange,
  runtimeName,
  textOf,
  waitUntil,
  withServer,
  withTimeout,
} from "./helpers.ts";

//#region Pure functions

describe("parseRange", () => {
  const r = (...pairs: Array<[number, number]>): RangeResult => ({
    kind: "ranges",
    ranges: pairs.map(([start, end]) => ({ start, end })),
  });
  const NONE: RangeResult = { kind: "none" };
  const UNSATISFIABLE: RangeResult = { kind: "unsatisfiable" };
  const many = (count: number) =>
    "bytes=" + Array.from({ length: count }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(",");
  // [name, header, size, expected]; size 10000 as in the examples of RFC 9110 §14.1.2.
  const CASES: Array<[string, string | null, number, RangeResult]> = [
    ["§14.1.2 the first 500 bytes: bytes=0-499", "bytes=0-499", 10000, r([0, 499])],
    ["§14.1.2 the second 500 bytes: bytes=500-999", "bytes=500-999", 10000, r([500, 999])],
    ["§14.1.2 the final 500 bytes: bytes=-500", "bytes=-500", 10000, r([9500, 9999])],
    ["§14.1.2 the final 500 bytes: bytes=9500-", "bytes=9500-", 10000, r([9500, 9999])],
    [
      "§14.1.2 first and last bytes only: bytes=0-0,-1",
      "bytes=0-0,-1",
      10000,
      r([0, 0], [
        9999,
        9999,
      ]),
    ],
    [
      "§14.1.2 other valid ranges: bytes=500-600,601-999",
      "bytes=500-600,601-999",
      10000,
      r([500, 600], [601, 999]),
    ],
    [
      "§14.1.2 overlapping ranges kept as asked: bytes=500-700,601-999",
      "bytes=500-700,601-999",
      10000,
      r([500, 700], [601, 999]),
    ],
    [
      "§14.1.1 three ranges with OWS: bytes=0-999, 4500-5499, -1000",
      "bytes=0-999, 4500-5499, -1000",
      10000,
      r([0, 999], [4500, 5499], [9000, 9999]),
    ],
    ["§14.4 bytes=7000-7999", "bytes=7000-7999", 10000, r([7000, 7999])],
    ["open range from 0 is the whole file", "bytes=0-", 10000, r([0, 9999])],
    ["open range at the last byte", "bytes=9999-", 10000, r([9999, 9999])],
    ["last-pos past the end is clamped", "bytes=0-20000", 10000, r([0, 9999])],
    ["suffix as long as the file is the file", "bytes=-10000", 10000, r([0, 9999])],
    ["suffix longer than the file is the file", "bytes=-20000", 10000, r([0, 9999])],
    ["the unit is case-insensitive", "BYTES=0-1", 10000, r([0, 1])],
    ["empty list elements are ignored", "bytes=0-1,,2-3", 10000, r([0, 1], [2, 3])],
    ["OWS around commas", "bytes=0-1 ,\t3-4", 10000, r([0, 1], [3, 4])],
    ["unsatisfiable ranges are left out", "bytes=10000-, 0-1", 10000, r([0, 1])],
    [
      "a last-pos beyond 2^53 is clamped",
      "bytes=0-99999999999999999999",
      10000,
      r([0, 9999]),
    ],
    ["100 ranges are honoured", many(100), 10000, {
      kind: "ranges",
      ranges: Array.from({ length: 100 }, (_, i) => ({ start: i * 10, end: i * 10 + 1 })),
    }],
    ["first-pos at the size is unsatisfiable", "bytes=10000-", 10000, UNSATISFIABLE],
    ["first-pos past the size is unsatisfiable", "bytes=10001-10002", 10000, UNSATISFIABLE],
    ["a zero-length suffix is unsatisfiable", "bytes=-0", 10000, UNSATISFIABLE],
    ["all ranges unsatisfiable", "bytes=10000-10001, 20000-", 10000, UNSATISFIABLE],
    ["a huge first-pos is unsatisfiable", "bytes=99999999999999999999-", 10000, UNSATISFIABLE],
    ["an empty file satisfies no int-range", "bytes=0-", 0, UNSATISFIABLE],
    ["an empty file satisfies no suffix", "bytes=-1", 0, UNSATISFIABLE],
    ["no header", null, 10000, NONE],
    ["another unit is ignored", "items=0-1", 10000, NONE],
    ["a unit that only starts with bytes is ignored", "bytesx=0-1", 10000, NONE],
    ["last-pos before first-pos makes the header invalid", "bytes=5-4", 10000, NONE],
    ["one invalid spec invalidates the header", "bytes=0-1,5-4", 10000, NONE],
    ["no range-set", "bytes=", 10000, NONE],
    ["only empty elements", "bytes=,", 10000, NONE],
    ["a lone dash", "bytes=-", 10000, NONE],
    ["no dash", "bytes=1", 10000, NONE],
    ["spaces around =", "bytes = 0-1", 10000, NONE],
    ["a sign", "bytes=+1-2", 10000, NONE],
    ["a negative last-pos", "bytes=1--2", 10000, NONE],
    ["hex digits", "bytes=0x10-20", 10000, NONE],
    ["letters", "bytes=a-1", 10000, NONE],
    ["a parameter", "bytes=0-1;x", 10000, NONE],
    ["more than 100 ranges are ignored", many(101), 10000, NONE],
  ];
  for (const [name, header, size, expected] of CASES) {
    test(name, () => assert.deepEqual(parseRange(header, size), expected));
  }
});

describe("evaluatePreconditions", () => {
  // The validators and field values of RFC 9110 §13.1's examples.
  const LAST_MODIFIED = Date.UTC(1994, 9, 29, 19, 43, 31); // Sat, 29 Oct 1994 19:43:31 GMT
  const AT = "Sat, 29 Oct 1994 19:43:31 GMT";
  const BEFORE = "Sat, 29 Oct 1994 19:43:30 GMT";
  const AFTER = "Sun, 30 Oct 1994 19:43:31 GMT";
  const STRONG = { etag: '"xyzzy"', lastModified: LAST_MODIFIED };
  const WEAK = { etag: 'W/"xyzzy"', lastModified: LAST_MODIFIED };
  type Case = [string, Record<string, string>, string, 200 | 304 | 412, typeof STRONG?];
  const CASES: Case[] = [
    ["no conditional header: 200", {}, "GET", 200],
    ['§13.1.1 If-Match: "xyzzy" matches: 200', { "if-match": '"xyzzy"' }, "GET", 200],
    [
      "§13.1.1 If-Match with a list that contains the tag: 200",
      { "if-match": '"xyzzy", "r2d2xxxx", "c3piozzzz"' },
      "PUT",
      200,
    ],
    ["If-Match without the tag: 412", { "if-match": '"r2d2xxxx"' }, "GET", 412],
    ["§13.1.1 If-Match: * with a representation: 200", { "if-match": "*" }, "PUT", 200],
    [
      "If-Match compares strongly: a weak tag never matches",
      { "if-match": 'W/"xyzzy"' },
      "GET",
      412,
    ],
    [
      "If-Match against a weak current ETag: 412",
      { "if-match": 'W/"xyzzy"' },
      "GET",
      412,
      WEAK,
    ],
    ["If-Match: * against a weak current ETag: 200", { "if-match": "*" }, "GET", 200, WEAK],
    ["a malformed If-Match matches nothing: 412", { "if-match": "xyzzy" }, "GET", 412],
    [
      "a failed If-Match wins over a matching If-None-Match: 412",
      { "if-match": '"nope"', "if-none-match": '"xyzzy"' },
      "GET",
      412,
    ],
    [
      "If-Unmodified-Since is ignored when If-Match is present",
      { "if-match": '"xyzzy"', "if-unmodified-since": BEFORE },
      "GET",
      200,
    ],
    ["§13.1.4 If-Unmodified-Since at the time: 200", { "if-unmodified-since": AT }, "PUT", 200],
    ["If-Unmodified-Since later: 200", { "if-unmodified-since": AFTER }, "PUT", 200],
    ["If-Unmodified-Since earlier: 412", { "if-unmodified-since": BEFORE }, "PUT", 412],
    ["If-Unmodified-Since earlier, GET: 412", { "if-unmodified-since": BEFORE }, "GET", 412],
    [
      "a malformed If-Unmodified-Since is ignored",
      { "if-unmodified-since": "yesterday" },
      "PUT",
      200,
    ],
    [
      "If-Unmodified-Since fails before If-None-Match is looked at: 412",
      { "if-unmodified-since": BEFORE, "if-none-match": '"xyzzy"' },
      "GET",
      412,
    ],
    ['§13.1.2 If-None-Match: "xyzzy", GET: 304', { "if-none-match": '"xyzzy"' }, "GET", 304],
    ['If-None-Match: "xyzzy", HEAD: 304', { "if-none-match": '"xyzzy"' }, "HEAD", 304],
    ['If-None-Match: "xyzzy", POST: 412', { "if-none-match": '"xyzzy"' }, "POST", 412],
    ["If-None-Match compares weakly: W/ matches", { "if-none-match": 'W/"xyzzy"' }, "GET", 304],
    [
      "If-None-Match with a weak current ETag: 304",
      { "if-none-match": '"xyzzy"' },
      "GET",
      304,
      WEAK,
    ],
    [
      "§13.1.2 If-None-Match list with the tag: 304",
      { "if-none-match": 'W/"xyzzy", W/"r2d2xxxx", W/"c3piozzzz"' },
      "GET",
      304,
    ],
    [
      "If-None-Match list without the tag: 200",
      { "if-none-match": '"r2d2xxxx", "c3piozzzz"' },
      "GET",
      200,
    ],
    ["§13.1.2 If-None-Match: *, GET: 304", { "if-none-match": "*" }, "GET", 304],
    ["§13.1.2 If-None-Match: *, PUT: 412", { "if-none-match": "*" }, "PUT", 412],
    ["a malformed If-None-Match matches nothing", { "if-none-match": "xyzzy" }, "GET", 200],
    [
      "If-Modified-Since is ignored when If-None-Match is present",
      { "if-none-match": '"nope"', "if-modified-since": AT },
      "GET",
      200,
    ],
    ["§13.1.3 If-Modified-Since at the time: 304", { "if-modified-since": AT }, "GET", 304],
    ["If-Modified-Since later: 304", { "if-modified-since": AFTER }, "GET", 304],
    ["If-Modified-Since, HEAD: 304", { "if-modified-since": AT }, "HEAD", 304],
    ["If-Modified-Since earlier: 200", { "if-modified-since": BEFORE }, "GET", 200],
    ["If-Modified-Since is ignored for POST", { "if-modified-since": AT }, "POST", 200],
    ["a malformed If-Modified-Since is ignored", { "if-modified-since": "1994-10-29" }, "GET", 200],
    [
      "If-Modified-Since in RFC 850 format: 304",
      { "if-modified-since": "Saturday, 29-Oct-94 19:43:31 GMT" },
      "GET",
      304,
    ],
    [
      "If-Modified-Since in asctime format: 304",
      { "if-modified-since": "Sat Oct 29 19:43:31 1994" },
      "GET",
      304,
    ],
    [
      "modification times compare in whole seconds",
      { "if-modified-since": AT },
      "GET",
      304,
      { etag: '"xyzzy"', lastModified: LAST_MODIFIED + 999 },
    ],
  ];
  for (const [name, headers, method, expected, validators = STRONG] of CASES) {
    test(name, () => {
      assert.equal(evaluatePreconditions(new Headers(headers), validators, method), expected);
    });
  }

  test("evaluatePreconditions ignores dates without a modification time", () => {
    const headers = new Headers({ "if-modified-since": AT, "if-unmodified-since": BEFORE });
    assert.equal(evaluatePreconditions(headers, { etag: '"x"', lastModified: null }, "GET"), 200);
  });
});

describe("evaluateIfRange", () => {
  const LAST_MODIFIED = Date.UTC(1994, 9, 29, 19, 43, 31);
  const CASES: Array<[string, string, { etag?: string; lastModified?: number }, boolean]> = [
    ['§13.1.5 a strong tag that matches: "xyzzy"', '"xyzzy"', { etag: '"xyzzy"' }, true],
    ["a strong tag that does not match", '"r2d2"', { etag: '"xyzzy"' }, false],
    ["a weak current ETag never matches", '"xyzzy"', { etag: 'W/"xyzzy"' }, false],
    ["a weak tag in If-Range never matches", 'W/"xyzzy"', { etag: 'W/"xyzzy"' }, false],
    [
      "§13.1.5 a date equal to Last-Modified",
      "Sat, 29 Oct 1994 19:43:31 GMT",
      { lastModified: LAST_MODIFIED },
      true,
    ],
    [
      "a date earlier than Last-Modified",
      "Sat, 29 Oct 1994 19:43:30 GMT",
      { lastModified: LAST_MODIFIED },
      false,
    ],
    [
      "a date later than Last-Modified",
      "Sat, 29 Oct 1994 19:43:32 GMT",
      { lastModified: LAST_MODIFIED },
      false,
    ],
    ["a date without a modification time", "Sat, 29 Oct 1994 19:43:31 GMT", {}, false],
    ["garbage", "soon", { etag: '"xyzzy"', lastModified: LAST_MODIFIED }, false],
  ];
  for (const [name, value, validators, expected] of CASES) {
    test(name, () => assert.equal(evaluateIfRange(value, validators), expected));
  }
});

describe("parseHttpDate", () => {
  const NOV_6_1994 = 784111777000;
  const CASES: Array<[string, string, number | null]> = [
    ["§5.6.7 IMF-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994],
    ["§5.6.7 obsolete RFC 850 format", "Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994],
    ["§5.6.7 obsolete asctime format", "Sun Nov  6 08:49:37 1994", NOV_6_1994],
    ["asctime with a two-digit day", "Thu Nov 10 08:49:37 1994", Date.UTC(1994, 10, 10, 8, 49, 37)],
    ["the epoch", "Thu, 01 Jan 1970 00:00:00 GMT", 0],
    ["a time zone other than GMT", "Sun, 06 Nov 1994 08:49:37 UTC", null],
    ["a one-digit day in IMF-fixdate", "Sun, 6 Nov 1994 08:49:37 GMT", null],
    ["a lower-case month", "Sun, 06 nov 1994 08:49:37 GMT", null],
    ["an unknown month", "Sun, 06 Foo 1994 08:49:37 GMT", null],
    ["31 February", "Sun, 31 Feb 1994 08:49:37 GMT", null],
    ["hour 24", "Sun, 06 Nov 1994 24:00:00 GMT", null],
    ["minute 60", "Sun, 06 Nov 1994 08:60:00 GMT", null],
    ["an extra space", "Sun,  06 Nov 1994 08:49:37 GMT", null],
    ["trailing text", "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", null],
    ["ISO 8601", "1994-11-06T08:49:37Z", null],
    ["empty", "", null],
  ];
  for (const [name, value, expected] of CASES) {
    test(name, () => assert.equal(parseHttpDate(value), expected));
  }
});

describe("negotiateEncoding", () => {
  const BOTH = ["br", "gzip"];
  const CASES: Array<[string, string | null, string[], string | null]> = [
    ["no header: no coding", null, BOTH, null],
    ["an empty header: identity only", "", BOTH, null],
    ["gzip", "gzip", BOTH, "gzip"],
    ["br", "br", BOTH, "br"],
    ["a browser's list: the server's preference on a tie", "gzip, deflate, br, zstd", BOTH, "br"],
    ["q-values decide", "br;q=0.5, gzip", BOTH, "gzip"],
    ["OWS around the weight", "br ; q=0.8, gzip;q=0.9", BOTH, "gzip"],
    ["q=0 refuses a coding", "br;q=0", ["br"], null],
    ["q=0 refuses one coding, another remains", "br;q=0, gzip", BOTH, "gzip"],
    ["* stands for every coding", "*", BOTH, "br"],
    ["*;q=0 refuses everything not named", "*;q=0", BOTH, null],
    ["a named coding beats *", "*;q=0.1, gzip", BOTH, "gzip"],
    ["identity preferred over a coding", "gzip;q=0.5, identity", BOTH, null],
    ["a coding weighed below 1 with identity unweighed", "gzip;q=0.5", BOTH, "gzip"],
    ["identity weighed equal: the coding", "gzip;q=0.5, identity;q=0.5", BOTH, "gzip"],
    ["identity refused", "gzip;q=0.5, identity;q=0", BOTH, "gzip"],
    ["* sets identity's weight too", "*;q=0.5, gzip;q=0", BOTH, "br"],
    ["x-gzip is gzip", "x-gzip", BOTH, "gzip"],
    ["names are case-insensitive", "GZIP", BOTH, "gzip"],
    ["q=1.000 is 1", "br;q=1.000", BOTH, "br"],
    ["a q over 1 is malformed and skipped", "br;q=2", BOTH, null],
    ["a q with four decimals is skipped", "br;q=0.0001", BOTH, null],
    ["a parameter other than q is skipped", "br;level=1", BOTH, null],
    ["nothing acceptable on offer", "br", ["gzip"], null],
    ["unknown codings are ignored", "compress, gzip", BOTH, "gzip"],
  ];
  for (const [name, header, available, expected] of CASES) {
    test(name, () => assert.equal(negotiateEncoding(header, available), expected));
  }
});

describe("contentTypeFor", () => {
  const CASES: Array<[string, string]> = [
    ["index.html", "text/html; charset=utf-8"],
    ["site/INDEX.HTM", "text/html; charset=utf-8"],
    ["app.js", "text/javascript; charset=utf-8"],
    ["module.mjs", "text/javascript; charset=utf-8"],
    ["style.css", "text/css; charset=utf-8"],
    ["data.json", "application/json; charset=utf-8"],
    ["notes.txt", "text/plain; charset=utf-8"],
    ["feed.xml", "application/xml"],
    ["logo.svg", "image/svg+xml"],
    ["photo.jpeg", "image/jpeg"],
    ["image.webp", "image/webp"],
    ["image.avif", "image/avif"],
    ["font.woff2", "font/woff2"],
    ["movie.mp4", "video/mp4"],
    ["clip.webm", "video/webm"],
    ["song.mp3", "audio/mpeg"],
    ["doc.pdf", "application/pdf"],
    ["module.wasm", "application/wasm"],
    ["archive.tar.gz", "application/gzip"],
    ["segment.ts", "video/mp2t"],
    ["C:\\site\\page.html", "text/html; charset=utf-8"],
    ["README", "application/octet-stream"],
    [".env", "application/octet-stream"],
    [".config.json", "application/json; charset=utf-8"],
    ["dir.html/file", "application/octet-stream"],
    ["file.unknownext", "application/octet-stream"],
    ["trailing.", "application/octet-stream"],
  ];
  for (const [name, expected] of CASES) {
    test(`${name} is ${expected}`, () => assert.equal(contentTypeFor(name), expected));
  }
});

describe("decodeRequestPath", () => {
  const ok = (segments: string[], trailingSlash = false): DecodedPath => ({
    segments,
    trailingSlash,
  });
  const CASES: Array<[string, DecodedPath | null]> = [
    ["/", ok([], true)],
    ["/a/b.txt", ok(["a", "b.txt"])],
    ["/a/b/", ok(["a", "b"], true)],
    ["/a%20b.txt", ok(["a b.txt"])],
    ["/caf%C3%A9", ok(["café"])],
    ["//etc/passwd", ok(["etc", "passwd"])],
    ["/a//b", ok(["a", "b"])],
    ["/%252e%252e/x", ok(["%2e%2e", "x"])],
    ["/.env", ok([".env"])],
    ["/..a/b..", ok(["..a", "b.."])],
    ["/..", null],
    ["/../etc/passwd", null],
    ["/.", null],
    ["/./a", null],
    ["/%2e%2e/etc/passwd", null],
    ["/%2E%2E/etc/passwd", null],
    ["/.%2e/etc/passwd", null],
    ["/%2e/a", null],
    ["/..%2fetc%2fpasswd", null],
    ["/%2e%2e%2fetc%2fpasswd", null],
    ["/a%2fb", null],
    ["/a%2Fb", null],
    ["/%2f", null],
    ["/%2fetc/passwd", null],
    ["/a%5c..%5csecret", null],
    ["/a%5Cb", null],
    ["/a\\b", null],
    ["/%00", null],
    ["/a.txt%00.html", null],
    ["/%zz", null],
    ["/%", null],
    ["/%e", null],
    ["/%c0%ae%c0%ae/secret", null],
    ["/%ff", null],
    ["a/b", null],
    ["", null],
  ];
  for (const [pathname, expected] of CASES) {
    test(`${JSON.stringify(pathname)} is ${expected === null ? "refused" : "accepted"}`, () => {
      assert.deepEqual(decodeRequestPath(pathname), expected);
    });
  }
});

//#endregion
//#region Router

const INFO: ConnInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 40000, transport: "tcp" },
  localAddr: { hostname: "127.0.0.1", port: 8080, transport: "tcp" },
  secure: false,
};

/** Asks `router` for `path` with `method`; returns the response. */
async function ask(router: Router, method: string, path: string): Promise<Response> {
  return await router.fetch(new Request(`http://localhost${path}`, { method }), INFO);
}

/** A handler that answers with its name and its parameters as JSON. */
function named(name: string) {
  return (_request: Request, _info: ConnInfo, params: Readonly<Record<string, string>>) =>
    Response.json({ name, params: { ...params } });
}

async function routed(router: Router, method: string, path: string) {
  const response = await ask(router, method, path);
  assert.equal(response.status, 200, `${method} ${path}`);
  return await response.json();
}

describe("Router", () => {
  const router = new Router()
    .get("/", named("home"))
    .get("/about", named("about"))
    .get("/about/", named("about slash"))
    .get("/users/:id", named("user"))
    .put("/users/:id", named("put user"))
    .get("/users/me", named("me"))
    .get("/users/:id/posts/:post", named("post"))
    .get("/users/new/edit", named("new edit"))
    .get("/files/*", named("files"))
    .get("/files/special", named("special"))
    .get("/caf\u00e9", named("cafe"))
    .post("/form", named("form"))
    .all("/any", named("any"))
    .post("/any", named("post any"))
    .get("/*", named("fallback"));

  test("Router matches a static path", async () => {
    assert.deepEqual(await routed(router, "GET", "/about"), { name: "about", params: {} });
  });

  test("Router matches the root", async () => {
    assert.deepEqual(await routed(router, "GET", "/"), { name: "home", params: {} });
  });

  test("Router treats a trailing slash as significant", async () => {
    assert.equal((await routed(router, "GET", "/about/")).name, "about slash");
  });

  test("Router hands parameters decoded", async () => {
    assert.deepEqual(await routed(router, "GET", "/users/j%C3%B6rg%20x"), {
      name: "user",
      params: { id: "jörg x" },
    });
  });

  test("Router keeps an encoded slash inside one parameter", async () => {
    assert.deepEqual((await routed(router, "GET", "/users/a%2Fb")).params, { id: "a/b" });
  });

  test("Router hands several parameters", async () => {
    assert.deepEqual((await routed(router, "GET", "/users/7/posts/42")).params, {
      id: "7",
      post: "42",
    });
  });

  test("Router prefers a static segment over a parameter", async () => {
    assert.equal((await routed(router, "GET", "/users/me")).name, "me");
  });

  test("Router falls back to the parameter when the static branch has no route", async () => {
    assert.deepEqual(await routed(router, "GET", "/users/new/posts/1"), {
      name: "post",
      params: { id: "new", post: "1" },
    });
  });

  test("Router prefers a static segment over a wildcard", async () => {
    assert.equal((await routed(router, "GET", "/files/special")).name, "special");
  });

  test("Router hands the wildcard's rest decoded", async () => {
    assert.deepEqual(await routed(router, "GET", "/files/a/b%20c.txt"), {
      name: "files",
      params: { "*": "a/b c.txt" },
    });
  });

  for (
    const path of ["/files/a%2Fb", "/files/..%2Fsecret", "/files/x/..%5Csecret", "/files/a%2fb/c"]
  ) {
    test(`Router's wildcard does not match a rest with an encoded separator: ${path}`, async () => {
      const response = await ask(router, "GET", path);
      assert.equal(response.status, 404, path);
      assert.equal(await response.text(), "404 Not Found\n");
    });
  }

  test("Router's wildcard still takes encoded characters other than separators", async () => {
    assert.deepEqual(await routed(router, "GET", "/files/%2ex%3F/%25"), {
      name: "files",
      params: { "*": ".x?/%" },
    });
  });

  test("Router matches an empty wildcard rest after the slash", async () => {
    assert.deepEqual((await routed(router, "GET", "/files/")).params, { "*": "" });
  });

  test("Router's wildcard does not match the path without its slash", async () => {
    assert.deepEqual(await routed(router, "GET", "/files"), {
      name: "fallback",
      params: { "*": "files" },
    });
  });

  test("Router matches a static segment written decoded", async () => {
    assert.equal((await routed(router, "GET", "/caf%C3%A9")).name, "cafe");
  });

  test("Router answers 400 to a malformed escape", async () => {
    const response = await ask(router, "GET", "/users/%E0%A4%A");
    assert.equal(response.status, 400);
  });

  test("Router answers 404 by default", async () => {
    const router = new Router().get("/a", named("a"));
    const response = await ask(router, "GET", "/b");
    assert.equal(response.status, 404);
    assert.equal(await response.text(), "404 Not Found\n");
  });

  test("Router answers HEAD for an unknown path with a body-less 404", async () => {
    const response = await ask(new Router().get("/a", named("a")), "HEAD", "/b");
    assert.equal(response.status, 404);
    assert.equal(response.body, null);
  });

  test("Router answers HEAD with a body-less 405 on a path without GET", async () => {
    const response = await ask(new Router().post("/a", named("a")), "HEAD", "/a");
    assert.equal(response.status, 405);
    assert.equal(response.headers.get("allow"), "POST, OPTIONS");
    assert.equal(response.body, null);
  });

  test("Router answers with a custom notFound", async () => {
    const router = new Router({
      notFound: (request) => new Response(`no ${new URL(request.url).pathname}`, { status: 404 }),
    });
    const response = await ask(router, "GET", "/x");
    assert.equal(response.status, 404);
    assert.equal(await response.text(), "no /x");
  });

  test("Router answers 405 with Allow for a path routed for other methods", async () => {
    const response = await ask(router, "DELETE", "/users/7");
    assert.equal(response.status, 405);
    assert.equal(response.headers.get("allow"), "GET, PUT, HEAD, OPTIONS");
  });

  test("Router's Allow gathers every matching route", async () => {
    const router = new Router().get("/users/me", named("me")).delete("/users/:id", named("del"));
    const response = await ask(router, "POST", "/users/me");
    assert.equal(response.status, 405);
    assert.equal(response.headers.get("allow"), "GET, DELETE, HEAD, OPTIONS");
  });

  test("Router tries a less specific route that has the method", async () => {
    const router = new Router().get("/users/me", named("me")).delete("/users/:id", named("del"));
    assert.deepEqual(await routed(router, "DELETE", "/users/me"), {
      name: "del",
      params: { id: "me" },
    });
  });

  test("Router answers OPTIONS with 204 and Allow", async () => {
    const router = new Router().post("/form", named("form")).put("/form", named("put"));
    const response = await ask(router, "OPTIONS", "/form");
    assert.equal(response.status, 204);
    assert.equal(response.headers.get("allow"), "POST, PUT, OPTIONS");
    assert.equal(response.body, null);
  });

  test("Router answers OPTIONS for an unknown path with 404", async () => {
    const router = new Router().get("/a", named("a"));
    assert.equal((await ask(router, "OPTIONS", "/b")).status, 404);
  });

  test("Router uses an OPTIONS route when there is one", async () => {
    const router = new Router().options("/a", () => new Response("custom"));
    assert.equal(await (await ask(router, "OPTIONS", "/a")).text(), "custom");
  });

  test("Router serves HEAD with the GET route, without the body", async () => {
    const router = new Router().get(
      "/a",
      () => new Response("hello", { status: 201, headers: { "x-a": "1", "content-length": "5" } }),
    );
    const response = await ask(router, "HEAD", "/a");
    assert.equal(response.status, 201);
    assert.equal(response.headers.get("x-a"), "1");
    assert.equal(response.headers.get("content-length"), "5");
    assert.equal(response.body, null);
  });

  test("Router gives HEAD the Content-Length GET would have, for a body there at once", async () => {
    const router = new Router().get("/a", () => new Response("héllo"));
    const response = await ask(router, "HEAD", "/a");
    assert.equal(response.headers.get("content-length"), "6");
    assert.equal(response.body, null);
  });

  test("Router drops the body of an async GET route for HEAD", async () => {
    let cancelled = false;
    const body = new ReadableStream({ pull() {}, cancel: () => void (cancelled = true) });
    const router = new Router().get("/a", async () => {
      await delay(1);
      return new Response(body);
    });
    const response = await ask(router, "HEAD", "/a");
    assert.equal(response.body, null);
    assert.equal(response.headers.get("content-length"), null, "a live stream has no length");
    assert.ok(cancelled, "the GET body was cancelled");
  });

  test("Router prefers a HEAD route over GET for HEAD", async () => {
    const router = new Router().get("/a", named("get")).head(
      "/a",
      () => new Response("x", { headers: { "x-head": "1" } }),
    );
    const response = await ask(router, "HEAD", "/a");
    assert.equal(response.headers.get("x-head"), "1");
    assert.equal(response.body, null);
  });

  test("Router's all() takes any method, a method's own route first", async () => {
    assert.equal((await routed(router, "PATCH", "/any")).name, "any");
    assert.equal((await routed(router, "POST", "/any")).name, "post any");
    const head = await ask(router, "HEAD", "/any");
    assert.equal(head.status, 200);
    assert.equal(head.body, null);
  });

  test("Router hands info to the handler", async () => {
    let seen: ConnInfo | undefined;
    const router = new Router().get("/", (_request, info) => {
      seen = info;
      return new Response("");
    });
    await ask(router, "GET", "/");
    assert.equal(seen, INFO);
  });

  test("Router's fetch is bound", async () => {
    const { fetch } = new Router().get("/", () => new Response("bound"));
    assert.equal(await (await fetch(new Request("http://localhost/"), INFO)).text(), "bound");
  });

  test("Router's params have no prototype", async () => {
    let params: object = {};
    const router = new Router().get("/:id", (_request, _info, p) => {
      params = p;
      return new Response("");
    });
    await ask(router, "GET", "/x");
    assert.equal(Object.getPrototypeOf(params), null);
  });

  test("Router's matching does not grow with the number of static routes", () => {
    const big = new Router();
    for (let i = 0; i < 50_000; i++) big.get(`/route/${i}/page`, named(`r${i}`));
    const request = new Request("http://localhost/route/49999/page");
    const started = performance.now();
    for (let i = 0; i < 5_000; i++) big.fetch(request, INFO);
    // A list tried in turn would compare 2.5e8 patterns here; the tree does 3 map lookups each.
    assert.ok(performance.now() - started < 1000, "5000 lookups among 50000 routes took > 1 s");
  });

  const BAD_PATTERNS: Array<[string, string]> = [
    ["no leading slash", "users"],
    ["* not last", "/a/*/b"],
    ["* inside a segment", "/a*"],
    ["an empty parameter name", "/a/:"],
    ["a parameter name with a dash", "/a/:user-id"],
    ["a repeated parameter", "/:id/:id"],
    ["__proto__ as a name", "/:__proto__"],
  ];
  for (const [name, pattern] of BAD_PATTERNS) {
    test(`Router refuses a pattern with ${name}`, () => {
      assert.throws(() => new Router().get(pattern, named("x")), TypeError);
    });
  }

  test("Router refuses the same method and pattern twice", () => {
    const router = new Router().get("/a/:id", named("a"));
    assert.throws(() => router.get("/a/:other", named("b")), TypeError);
  });

  test("Router refuses a method that is not a token", () => {
    assert.throws(() => new Router().on("GE T", "/", named("x")), TypeError);
  });

  test("Router lets routes name the same position differently", async () => {
    const router = new Router().get("/u/:id", named("get")).delete("/u/:userId", named("del"));
    assert.deepEqual((await routed(router, "GET", "/u/1")).params, { id: "1" });
    assert.deepEqual((await routed(router, "DELETE", "/u/1")).params, { userId: "1" });
  });
});

//#endregion
//#region End to end helpers

/** A parsed response from a raw exchange. */
interface RawResponse {
  status: number;
  headers: Map<string, string>;
  /** The body, one code unit per byte. */
  body: string;
  /** The whole response as received, one code unit per byte. */
  raw: string;
}

/** Sends one request (Connection: close is added) over a raw socket and parses the answer. */
async function exchange(
  port: number,
  target: string,
  headers: Record<string, string> = {},
  method = "GET",
): Promise<RawResponse> {
  let head = `${method} ${target} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: close\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  const raw = await rawExchange(port, `${head}\r\n`, 10_000);
  const end = raw.indexOf("\r\n\r\n");
  assert.ok(end > 0, `a complete head in ${JSON.stringify(raw.slice(0, 200))}`);
  const lines = raw.slice(0, end).split("\r\n");
  const parsed = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    parsed.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: Number(lines[0].split(" ")[1]), headers: parsed, body: raw.slice(end + 4), raw };
}

/** Decodes a latin1 body string as UTF-8. */
function utf8(body: string): string {
  return new TextDecoder().decode(bytesOf(body));
}

const MTIME = new Date(Date.UTC(2024, 0, 2, 3, 4, 5));
const HTTP_MTIME = "Tue, 02 Jan 2024 03:04:05 GMT";
const SECRET = "TOP-SECRET outside the root";
/** data.bin: 10000 bytes, byte i = i % 251, so every range has distinct content. */
const DATA = Array.from({ length: 10000 }, (_, i) => String.fromCharCode(i % 251)).join("");

interface Site {
  /** The temp directory: secret.txt and root/ are inside it. */
  dir: string;
  root: string;
  port: number;
}

/** Writes the fixture tree into a new temp directory. */
async function makeSite(): Promise<{ dir: string; root: string }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "wireserve-static-"));
  const root = path.join(dir, "root");
  const write = async (name: string, content: string | Uint8Array) => {
    const file = path.join(root, name);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, content);
    await fs.utimes(file, MTIME, MTIME);
  };
  await fs.mkdir(root);
  await fs.writeFile(path.join(dir, "secret.txt"), SECRET);
  await write("hello.txt", "hello world\n");
  await write("data.bin", bytesOf(DATA));
  await write("empty.txt", "");
  await write("app.js", "console.log('identity');\n");
  await write("app.js.br", "BROTLI-BYTES");
  await write("app.js.gz", "GZIP-BYTES");
  await write("style.css", "body { color: red }\n");
  await write("style.css.gz", "GZIP-CSS");
  await write("leak.js", "console.log('leak');\n");
  await write("<script>.txt", "angle");
  await write('a"b.txt', "quote");
  await write("a&b c.txt", "amp");
  await write(".env", "SECRET=1");
  await write(".hidden/file.txt", "hidden");
  await write("site/index.html", "<h1>site</h1>");
  await write("sub/nested.txt", "nested");
  await write("sub/deeper/x.txt", "x");
  await write("sub/a-file.txt", "a");
  await fs.symlink("../secret.txt", path.join(root, "link-out.txt"));
  await fs.symlink("hello.txt", path.join(root, "link-in.txt"));
  await fs.symlink("..", path.join(root, "linkdir-out"));
  await fs.symlink("../secret.txt", path.join(root, "leak.js.gz"));
  return { dir, root };
}

/** Serves `handler(root)` for a fresh fixture, runs `body`, then shuts down and removes it all. */
async function withSite(
  handler: (root: string) => Handler,
  body: (site: Site) => Promise<void>,
): Promise<void> {
  const { dir, root } = await makeSite();
  try {
    const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler(root));
    const { port } = await withTimeout(server.ready, 3000, "Server.ready");
    await withServer({ server }, () => body({ dir, root, port }));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** serveDir with `options` over the fixture. */
function dir(options: Omit<ServeDirOptions, "root"> = {}): (root: string) => Handler {
  return (root) => (request) => serveDir(request, { root, ...options });
}

//#endregion
//#region Static files end to end

describe("serveDir", () => {
  test("serveDir serves a file with its metadata", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/hello.txt");
      assert.equal(response.status, 200);
      assert.equal(response.body, "hello world\n");
      assert.equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(response.headers.get("content-length"), "12");
      assert.equal(response.headers.get("last-modified"), HTTP_MTIME);
      assert.equal(response.headers.get("etag"), `"c-${MTIME.getTime().toString(16)}"`);
      assert.equal(response.headers.get("accept-ranges"), "bytes");
      assert.equal(response.headers.get("x-content-type-options"), "nosniff");
      assert.equal(response.headers.get("vary"), "Accept-Encoding");
    });
  });

  test("serveDir works with fetch", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await fetch(`http://127.0.0.1:${port}/data.bin`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "application/octet-stream");
      assert.equal(textOf(new Uint8Array(await response.arrayBuffer())), DATA);
    });
  });

  test("serveDir serves an empty file", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/empty.txt");
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-length"), "0");
      assert.equal(response.body, "");
    });
  });

  test("serveDir answers HEAD with the GET headers and no body", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/hello.txt", {}, "HEAD");
      assert.equal(response.status, 200);
      assert.equal(response.body, "");
      assert.equal(response.headers.get("etag"), `"c-${MTIME.getTime().toString(16)}"`);
      assert.equal(response.headers.get("content-length"), "12");
    });
  });

  test("serveDir answers If-None-Match with 304", async () => {
    await withSite(dir(), async ({ port }) => {
      const etag = (await exchange(port, "/hello.txt")).headers.get("etag") as string;
      const response = await exchange(port, "/hello.txt", { "if-none-match": etag });
      assert.equal(response.status, 304);
      assert.equal(response.body, "");
      assert.equal(response.headers.get("etag"), etag);
      assert.equal(response.headers.get("vary"), "Accept-Encoding");
      assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    });
  });

  test("serveDir answers If-Modified-Since with 304", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/hello.txt", { "if-modified-since": HTTP_MTIME });
      assert.equal(response.status, 304);
    });
  });

  test("serveDir answers a failed If-Match with 412", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/hello.txt", { "if-match": '"other"' });
      assert.equal(response.status, 412);
      assert.equal(response.body, "412 Precondition Failed\n");
    });
  });

  test("serveDir answers a failed If-Unmodified-Since with 412", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/hello.txt", {
        "if-unmodified-since": "Mon, 01 Jan 2024 00:00:00 GMT",
      });
      assert.equal(response.status, 412);
    });
  });

  const SINGLE_RANGES: Array<[string, number, number]> = [
    ["bytes=0-499", 0, 499],
    ["bytes=500-999", 500, 999],
    ["bytes=-500", 9500, 9999],
    ["bytes=9500-", 9500, 9999],
    ["bytes=9999-20000", 9999, 9999],
    ["bytes=500-600,601-999", 500, 999],
  ];
  for (const [range, start, end] of SINGLE_RANGES) {
    test(`serveDir answers Range: ${range} with 206 for bytes ${start}-${end}`, async () => {
      await withSite(dir(), async ({ port }) => {
        const response = await exchange(port, "/data.bin", { range });
        assert.equal(response.status, 206);
        assert.equal(response.headers.get("content-range"), `bytes ${start}-${end}/10000`);
        assert.equal(response.headers.get("content-length"), String(end - start + 1));
        assert.equal(response.body, DATA.slice(start, end + 1));
      });
    });
  }

  test("a file too large to hold streams whole and in ranges across its read chunks, byte for byte", async () => {
    // 700 KiB: past maxFileBytes, so read from disk in chunks for each response, the last partial.
    const size = 700 * 1024;
    const large = Array.from(
      { length: size },
      (_, i) => String.fromCharCode((i * 7 + (i >> 16)) & 0xff),
    )
      .join("");
    await withSite(dir(), async ({ root, port }) => {
      await fs.writeFile(path.join(root, "large.bin"), bytesOf(large));
      for (const cache of ["", "x"]) { // the second time the path is learnt; the contents never are
        const whole = await exchange(port, `/large.bin?${cache}`);
        assert.equal(whole.status, 200);
        assert.equal(whole.headers.get("content-length"), String(size));
        assert.ok(whole.body === large, "the whole file");
      }
      for (
        const [from, to] of [[262_000, 524_500], [0, 262_144], [262_143, 262_144], [
          524_288,
          size - 1,
        ]]
      ) {
        const ranged = await exchange(port, "/large.bin", { range: `bytes=${from}-${to}` });
        assert.equal(ranged.status, 206);
        assert.equal(ranged.headers.get("content-range"), `bytes ${from}-${to}/${size}`);
        assert.ok(ranged.body === large.slice(from, to + 1), `bytes ${from}-${to}`);
      }
      const suffix = await exchange(port, "/large.bin", { range: "bytes=-300000" });
      assert.ok(suffix.body === large.slice(size - 300_000), "the last 300,000 bytes");
      const several = await exchange(port, "/large.bin", { range: "bytes=100-200,500000-500100" });
      assert.equal(several.status, 206);
      assert.ok(several.body.includes(large.slice(500_000, 500_101)), "the second part");
      assert.ok(several.body.includes(large.slice(100, 201)), "the first part");
    });
  });

  test("serveDir answers several ranges with multipart/byteranges", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/data.bin", { range: "bytes=-1,0-0,5000-5009" });
      assert.equal(response.status, 206);
      const type = response.headers.get("content-type") as string;
      const boundary = /^multipart\/byteranges; boundary=([0-9a-f]+)$/.exec(type)?.[1];
      assert.ok(boundary, type);
      assert.equal(Number(response.headers.get("content-length")), response.body.length);
      const parts = [[0, 0], [5000, 5009], [9999, 9999]].map(([start, end], i) =>
        `${i === 0 ? "" : "\r\n"}--${boundary}\r\ncontent-type: application/octet-stream\r\n` +
        `content-range: bytes ${start}-${end}/10000\r\n\r\n${DATA.slice(start, end + 1)}`
      );
      assert.equal(response.body, `${parts.join("")}\r\n--${boundary}--\r\n`);
    });
  });

  test("serveDir answers an unsatisfiable range with 416 and Content-Range */size", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/data.bin", { range: "bytes=10000-" });
      assert.equal(response.status, 416);
      assert.equal(response.headers.get("content-range"), "bytes */10000");
    });
  });

  test("serveDir ignores an invalid Range", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/data.bin", { range: "bytes=5-4" });
      assert.equal(response.status, 200);
      assert.equal(response.body.length, 10000);
    });
  });

  test("serveDir ignores Range on HEAD", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/data.bin", { range: "bytes=0-1" }, "HEAD");
      assert.equal(response.status, 200);
    });
  });

  test("serveDir honours Range when If-Range is the Last-Modified date", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/data.bin", {
        range: "bytes=0-1",
        "if-range": HTTP_MTIME,
      });
      assert.equal(response.status, 206);
    });
  });

  test("serveDir sends the whole file when If-Range is stale", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/data.bin", {
        range: "bytes=0-1",
        "if-range": "Mon, 01 Jan 2024 00:00:00 GMT",
      });
      assert.equal(response.status, 200);
      assert.equal(response.body.length, 10000);
    });
  });

  test("serveDir honours If-Range with its strong ETag, and not with a weak form of it", async () => {
    await withSite(dir(), async ({ port }) => {
      const etag = (await exchange(port, "/data.bin", {}, "HEAD")).headers.get("etag") as string;
      assert.ok(!etag.startsWith("W/"), etag);
      const ranged = await exchange(port, "/data.bin", { range: "bytes=0-1", "if-range": etag });
      assert.equal(ranged.status, 206);
      const weak = await exchange(port, "/data.bin", {
        range: "bytes=0-1",
        "if-range": `W/${etag}`,
      });
      assert.equal(weak.status, 200);
    });
  });

  const PRECOMPRESSED: Array<[string, string, string | null, string | null, string]> = [
    ["/app.js", "gzip, deflate, br", "br", "br", "BROTLI-BYTES"],
    ["/app.js", "gzip", "gzip", "gzip", "GZIP-BYTES"],
    ["/app.js", "br;q=0.5, gzip", "gzip", "gzip", "GZIP-BYTES"],
    ["/app.js", "br;q=0, gzip;q=0", null, null, "console.log('identity');\n"],
    ["/app.js", "", null, null, "console.log('identity');\n"],
    ["/style.css", "br, gzip", "gzip", "gzip", "GZIP-CSS"],
    ["/style.css", "br", null, null, "body { color: red }\n"],
    // leak.js.gz is a symlink to a file outside the root: it must not be served.
    ["/leak.js", "gzip", null, null, "console.log('leak');\n"],
  ];
  for (const [target, acceptEncoding, coding, expected, body] of PRECOMPRESSED) {
    test(
      `serveDir serves ${target} for Accept-Encoding ${JSON.stringify(acceptEncoding)} as ${
        expected ?? "identity"
      }`,
      async () => {
        await withSite(dir(), async ({ port }) => {
          const response = await exchange(port, target, { "accept-encoding": acceptEncoding });
          assert.equal(response.status, 200);
          assert.equal(response.headers.get("content-encoding") ?? null, coding);
          assert.equal(response.headers.get("vary"), "Accept-Encoding");
          assert.equal(response.headers.get("content-type"), contentTypeFor(target));
          assert.equal(response.body, body);
        });
      },
    );
  }

  test("serveDir gives a precompressed variant its own ETag", async () => {
    await withSite(dir(), async ({ port }) => {
      const plain = await exchange(port, "/app.js");
      const br = await exchange(port, "/app.js", { "accept-encoding": "br" });
      assert.notEqual(plain.headers.get("etag"), br.headers.get("etag"));
    });
  });

  test("serveDir serves no sibling with precompressed: false", async () => {
    await withSite(dir({ precompressed: false }), async ({ port }) => {
      const response = await exchange(port, "/app.js", { "accept-encoding": "br" });
      assert.equal(response.body, "console.log('identity');\n");
      assert.equal(response.headers.get("vary"), undefined);
    });
  });

  test("serveDir redirects a directory without a trailing slash, keeping the query", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/site?a=1&b=%20");
      assert.equal(response.status, 301);
      assert.equal(response.headers.get("location"), "/site/?a=1&b=%20");
      assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    });
  });

  test("serveDir redirects //host-like paths to a path on this host", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "//site");
      assert.equal(response.status, 301);
      assert.equal(response.headers.get("location"), "/site/");
    });
  });

  test("serveDir serves a directory's index.html", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/site/");
      assert.equal(response.status, 200);
      assert.equal(response.body, "<h1>site</h1>");
      assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    });
  });

  test("serveDir lists a directory: directories first, sorted, with sizes and dates", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/sub/");
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
      const html = utf8(response.body);
      assert.match(html, /<title>Index of \/sub\/<\/title>/);
      const hrefs = [...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1]);
      assert.deepEqual(hrefs, ["../", "deeper/", "a-file.txt", "nested.txt"]);
      assert.match(html, /nested\.txt<\/a><\/td><td>6 B<\/td><td>2024-01-02 03:04<\/td>/);
    });
  });

  test("serveDir escapes names in a listing", async () => {
    await withSite(dir(), async ({ port }) => {
      const html = utf8((await exchange(port, "/")).body);
      assert.ok(!html.includes("<script>"), "no raw <script>");
      assert.ok(html.includes(`href="%3Cscript%3E.txt">&#60;script&#62;.txt</a>`), html);
      assert.ok(html.includes(`href="a%22b.txt">a&#34;b.txt</a>`), html);
      assert.ok(html.includes(`href="a%26b%20c.txt">a&#38;b c.txt</a>`), html);
      assert.ok(!html.includes('href="../"'), "no parent link at the root");
    });
  });

  test("serveDir hides dotfiles and links leaving the root from a listing", async () => {
    await withSite(dir(), async ({ port }) => {
      const html = utf8((await exchange(port, "/")).body);
      assert.ok(!html.includes(".env"));
      assert.ok(!html.includes(".hidden"));
      assert.ok(!html.includes("link-out.txt"));
      assert.ok(!html.includes("linkdir-out"));
      assert.ok(html.includes("link-in.txt"));
    });
  });

  test("serveDir answers 404 for a directory without index when listing is off", async () => {
    await withSite(dir({ listing: false }), async ({ port }) => {
      assert.equal((await exchange(port, "/sub/")).status, 404);
      assert.equal((await exchange(port, "/site/")).status, 200);
    });
  });

  test("serveDir lists instead of serving the index when index is false", async () => {
    await withSite(dir({ index: false }), async ({ port }) => {
      const response = await exchange(port, "/site/");
      assert.match(utf8(response.body), /href="index\.html"/);
    });
  });

  test("serveDir answers 404 for a file with a trailing slash", async () => {
    await withSite(dir(), async ({ port }) => {
      assert.equal((await exchange(port, "/hello.txt/")).status, 404);
    });
  });

  test("serveDir answers 404 for a missing file, naming no path", async () => {
    await withSite(dir(), async ({ port, dir }) => {
      const response = await exchange(port, "/missing.txt");
      assert.equal(response.status, 404);
      assert.equal(response.body, "404 Not Found\n");
      assert.ok(!response.raw.includes(dir));
    });
  });

  test("serveDir answers 405 with Allow to other methods", async () => {
    await withSite(dir(), async ({ port }) => {
      const response = await exchange(port, "/hello.txt", { "content-length": "0" }, "POST");
      assert.equal(response.status, 405);
      assert.equal(response.headers.get("allow"), "GET, HEAD");
      assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    });
  });

  const DOTFILES = ["/.env", "/.hidden/file.txt", "/.hidden/", "/%2eenv"];
  for (const target of DOTFILES) {
    test(`serveDir hides ${target}`, async () => {
      await withSite(dir(), async ({ port }) => {
        assert.equal((await exchange(port, target)).status, 404);
      });
    });
  }

  test("serveDir serves dotfiles with dotfiles: true", async () => {
    await withSite(dir({ dotfiles: true }), async ({ port }) => {
      assert.equal((await exchange(port, "/.env")).body, "SECRET=1");
      assert.equal((await exchange(port, "/.hidden/file.txt")).body, "hidden");
    });
  });

  // Each is sent raw: fetch and URL parsers resolve dot segments before a request leaves.
  const TRAVERSALS = [
    "/../secret.txt",
    "/../../../../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/%2f..%2fsecret.txt",
    "/%2fetc%2fpasswd",
    "/a%5c..%5c..%5csecret.txt",
    "/%5c..%5csecret.txt",
    "/%00",
    "/hello.txt%00.html",
    "/%252e%252e/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "//etc/passwd",
    "///../secret.txt",
    "/sub/../../secret.txt",
    "http://127.0.0.1/../secret.txt",
    "http://127.0.0.1/%2e%2e/secret.txt",
    "http://127.0.0.1/..%2fsecret.txt",
    "/link-out.txt",
    "/linkdir-out/secret.txt",
    "/linkdir-out/",
  ];
  for (const target of TRAVERSALS) {
    test(`serveDir refuses ${target}`, async () => {
      await withSite(dir(), async ({ port, dir }) => {
        const response = await exchange(port, target);
        assert.ok(
          response.status === 400 || response.status === 404,
          `status ${response.status} for ${target}`,
        );
        assert.ok(!response.raw.includes("TOP-SECRET"), "the secret leaked");
        assert.ok(!response.raw.includes("root:"), "/etc/passwd leaked");
        assert.ok(!response.raw.includes(dir), "a file system path leaked");
      });
    });
  }

  test("serveDir: an encoded .. is resolved by URL parsing, as a literal one is: never above the root", async () => {
    await withSite(dir(), async ({ port }) => {
      // request.url is parsed by the WHATWG URL parser, which takes %2e%2e as a dot segment: the
      // same on every runtime, and the same as Deno.serve's and Bun.serve's request.url.
      for (
        const target of ["/sub/%2e%2e/hello.txt", "/sub/%2E%2E/hello.txt", "/sub/.%2e/hello.txt"]
      ) {
        const response = await exchange(port, target);
        assert.equal(response.status, 200, target);
        assert.equal(response.body, "hello world\n", target);
      }
      for (const target of ["/%2e%2e/secret.txt", "/../secret.txt", "/%2e%2e/%2e%2e/etc/passwd"]) {
        assert.equal((await exchange(port, target)).status, 404, target);
      }
    });
  });

  test("serveDir follows a symlink that stays inside the root", async () => {
    await withSite(dir(), async ({ port }) => {
      assert.equal((await exchange(port, "/link-in.txt")).body, "hello world\n");
    });
  });

  test("serveDir follows symlinks out of the root with followSymlinks: true", async () => {
    await withSite(dir({ followSymlinks: true }), async ({ port }) => {
      assert.equal((await exchange(port, "/link-out.txt")).body, SECRET);
      assert.equal((await exchange(port, "/linkdir-out/secret.txt")).body, SECRET);
    });
  });

  /** The headers of a CORS preflight for a GET. */
  const PREFLIGHT = { origin: "http://example.com", "access-control-request-method": "GET" };

  test("serveDir adds CORS headers and answers a preflight with cors: true", async () => {
    await withSite(dir({ cors: true }), async ({ port }) => {
      const response = await exchange(port, "/hello.txt");
      assert.equal(response.headers.get("access-control-allow-origin"), "*");
      const preflight = await exchange(port, "/hello.txt", PREFLIGHT, "OPTIONS");
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
    });
  });

  const CORS_CASES: Array<
    [name: string, target: string, headers: Record<string, string>, method: string, status: number]
  > = [
    ["a file", "/hello.txt", {}, "GET", 200],
    ["HEAD", "/hello.txt", {}, "HEAD", 200],
    ["a range", "/data.bin", { range: "bytes=0-9" }, "GET", 206],
    ["several ranges", "/data.bin", { range: "bytes=0-9,5000-5009" }, "GET", 206],
    ["a 304", "/hello.txt", { "if-modified-since": HTTP_MTIME }, "GET", 304],
    ["a 412", "/hello.txt", { "if-match": '"nope"' }, "GET", 412],
    ["a 416", "/data.bin", { range: "bytes=20000-" }, "GET", 416],
    ["a redirect", "/sub", {}, "GET", 301],
    ["an index", "/site/", {}, "GET", 200],
    ["a listing", "/sub/", {}, "GET", 200],
    ["a missing file", "/missing.txt", {}, "GET", 404],
    ["a dotfile", "/.env", {}, "GET", 404],
    ["a refused path", "/..%2fsecret.txt", {}, "GET", 400],
    ["another method", "/hello.txt", {}, "DELETE", 405],
  ];

  test("serveDir adds CORS headers to every kind of answer with cors: true", async () => {
    await withSite(dir({ cors: true }), async ({ port }) => {
      for (const [name, target, headers, method, status] of CORS_CASES) {
        const response = await exchange(port, target, headers, method);
        assert.equal(response.status, status, name);
        assert.equal(response.headers.get("access-control-allow-origin"), "*", name);
        assert.equal(
          response.headers.get("access-control-expose-headers"),
          "accept-ranges, content-encoding, content-range, etag, last-modified",
          name,
        );
        assert.equal(response.headers.get("x-content-type-options"), "nosniff", name);
      }
      const other = await exchange(port, "/hello.txt", {}, "DELETE");
      assert.equal(other.headers.get("allow"), "GET, HEAD, OPTIONS");
    });
  });

  test("serveDir adds no CORS headers without cors", async () => {
    await withSite(dir(), async ({ port }) => {
      for (const [name, target, headers, method, status] of CORS_CASES) {
        const response = await exchange(port, target, headers, method);
        assert.equal(response.status, status, name);
        assert.equal(response.headers.get("access-control-allow-origin"), undefined, name);
      }
      const preflight = await exchange(port, "/hello.txt", PREFLIGHT, "OPTIONS");
      assert.equal(preflight.status, 405);
      assert.equal(preflight.headers.get("allow"), "GET, HEAD");
    });
  });

  test("serveDir strips urlPrefix", async () => {
    const router = (root: string) =>
      new Router()
        .get("/static/*", (request) => serveDir(request, { root, urlPrefix: "/static" }))
        .get("/static", (request) => serveDir(request, { root, urlPrefix: "/static/" }))
        .fetch;
    await withSite(router, async ({ port }) => {
      assert.equal((await exchange(port, "/static/hello.txt")).body, "hello world\n");
      const redirect = await exchange(port, "/static");
      assert.equal(redirect.status, 301);
      assert.equal(redirect.headers.get("location"), "/static/");
      assert.equal((await exchange(port, "/static/sub")).headers.get("location"), "/static/sub/");
      assert.match(utf8((await exchange(port, "/static/")).body), /Index of \/static\//);
    });
  });

  test("serveDir answers 404 outside urlPrefix", async () => {
    const response = await serveDir(new Request("http://localhost/staticx/hello.txt"), {
      root: ".",
      urlPrefix: "/static",
    });
    assert.equal(response.status, 404);
  });

  test("serveDir refuses a urlPrefix without a leading slash", async () => {
    await assert.rejects(
      serveDir(new Request("http://localhost/"), { root: ".", urlPrefix: "static" }),
      TypeError,
    );
  });

  test("serveDir streams a 64 MiB file with bounded memory", async () => {
    await withSite(dir(), async ({ root, port }) => {
      const size = 64 * 1024 * 1024;
      const handle = await fs.open(path.join(root, "big.bin"), "w");
      await handle.truncate(size); // sparse: no disk, reads as zeros
      await handle.close();
      const memory = () => process.memoryUsage().rss;
      const before = memory();
      let received = 0;
      const socket = net.connect({ port, host: "127.0.0.1" });
      try {
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            socket.once("connect", resolve);
            socket.once("error", reject);
          }),
          3000,
          "a connection",
        );
        socket.pause(); // a client that does not read
        socket.write("GET /big.bin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        await delay(1000);
        const growth = memory() - before;
        assert.ok(
          growth < 32 * 1024 * 1024,
          `RSS grew by ${(growth / 1048576).toFixed(1)} MiB while the client did not read`,
        );
        const done = new Promise<void>((resolve) => socket.once("end", resolve));
        socket.on("data", (chunk: Uint8Array) => received += chunk.length);
        socket.resume();
        await withTimeout(done, 30_000, "the whole file");
        assert.ok(received > size && received < size + 1024, `received ${received} bytes`);
      } finally {
        socket.destroy();
      }
    });
  });
});

describe("serveFile", () => {
  test("serveFile serves a file by path", async () => {
    const { dir, root } = await makeSite();
    try {
      const response = await serveFile(
        new Request("http://localhost/whatever"),
        path.join(root, "hello.txt"),
      );
      assert.equal(response.status, 200);
      assert.equal(await response.text(), "hello world\n");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test("serveFile answers 404 for a directory and for a missing file", async () => {
    const { dir, root } = await makeSite();
    try {
      const request = new Request("http://localhost/");
      assert.equal((await serveFile(request, root)).status, 404);
      assert.equal((await serveFile(request, path.join(root, "nope"))).status, 404);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test("serveFile answers 405 for POST", async () => {
    const response = await serveFile(new Request("http://localhost/", { method: "POST" }), ".");
    assert.equal(response.status, 405);
    assert.equal(response.headers.get("allow"), "GET, HEAD");
  });

  test("serveFile adds CORS headers to files, errors and preflights with cors: true", async () => {
    const { dir, root } = await makeSite();
    try {
      const file = path.join(root, "hello.txt");
      const answers = [
        await serveFile(new Request("http://localhost/"), file, { cors: true }),
        await serveFile(new Request("http://localhost/"), path.join(root, "nope"), { cors: true }),
        await serveFile(new Request("http://localhost/", { method: "OPTIONS" }), file, {
          cors: true,
        }),
      ];
      assert.deepEqual(answers.map((response) => response.status), [200, 404, 204]);
      for (const response of answers) {
        assert.equal(response.headers.get("access-control-allow-origin"), "*");
        await response.body?.cancel();
      }
      assert.equal(answers[2].headers.get("allow"), "GET, HEAD, OPTIONS");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test("serveFile returns no body for HEAD", async () => {
    const { dir, root } = await makeSite();
    try {
      const response = await serveFile(
        new Request("http://localhost/", { method: "HEAD" }),
        path.join(root, "data.bin"),
      );
      assert.equal(response.body, null);
      assert.equal(response.headers.get("content-length"), "10000");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Router under serve", () => {
  test("Router answers HEAD without a body over the wire", async () => {
    const router = new Router().get("/a", () => new Response("hello"));
    await withSite(() => router.fetch, async ({ port }) => {
      const response = await exchange(port, "/a", {}, "HEAD");
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-length"), "5");
      assert.equal(response.body, "");
    });
  });

  test("Router answers 405 and 404 over the wire", async () => {
    const router = new Router().get("/users/:id", (_r, _i, { id }) => new Response(id));
    await withSite(() => router.fetch, async ({ port }) => {
      assert.equal((await exchange(port, "/users/%F0%9F%99%82")).body, bytesOfUtf8("🙂"));
      const post = await exchange(port, "/users/1", { "content-length": "0" }, "POST");
      assert.equal(post.status, 405);
      assert.equal(post.headers.get("allow"), "GET, HEAD, OPTIONS");
      assert.equal((await exchange(port, "/nope")).status, 404);
    });
  });
});

/** The UTF-8 bytes of `text` as a latin1 string, as raw bodies are. */
function bytesOfUtf8(text: string): string {
  return textOf(new TextEncoder().encode(text));
}

describe("serveDir fallback", () => {
  const HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
  const spa = dir({ fallback: "site/index.html" });
  // [what, target, Accept, method, expected status, expected body (null: not checked)]
  const cases: Array<[string, string, string, string, number, string | null]> = [
    ["a page URL a browser navigates to", "/users/42", HTML, "GET", 200, "<h1>site</h1>"],
    ["the root's missing page with a query", "/settings?tab=2", HTML, "GET", 200, "<h1>site</h1>"],
    ["HEAD, with no body", "/users/42", HTML, "HEAD", 200, ""],
    ["a file that exists, which wins", "/hello.txt", HTML, "GET", 200, "hello world\n"],
    ["a fetch() that accepts anything", "/api/users", "*/*", "GET", 404, null],
    ["a request with no Accept", "/users/42", "", "GET", 404, null],
    ["a missing asset (a dot in the last segment)", "/missing.js", HTML, "GET", 404, null],
    ["a path with a dot segment", "/.hidden/page", HTML, "GET", 404, null],
    ["a path with an encoded dot segment", "/%2ehidden/page", HTML, "GET", 404, null],
    ["a dotfile", "/.secret", HTML, "GET", 404, null],
    ["POST", "/users/42", HTML, "POST", 405, null],
  ];
  for (const [what, target, accept, method, status, body] of cases) {
    test(`serveDir's fallback for ${what}: ${status}`, async () => {
      await withSite(spa, async ({ port }) => {
        const response = await exchange(port, target, accept === "" ? {} : { accept }, method);
        assert.equal(response.status, status);
        if (body !== null) assert.equal(response.body, body);
        if (status === 200 && target !== "/hello.txt") {
          assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
        }
      });
    });
  }

  test("serveDir's fallback answers If-None-Match with 304, as its own file would", async () => {
    await withSite(spa, async ({ port }) => {
      const first = await exchange(port, "/users/42", { accept: HTML });
      const etag = first.headers.get("etag");
      assert.ok(etag);
      const again = await exchange(port, "/users/7", { accept: HTML, "if-none-match": etag });
      assert.equal(again.status, 304);
    });
  });

  test("serveDir's fallback under a urlPrefix is found from the root", async () => {
    await withSite(dir({ fallback: "/site/index.html", urlPrefix: "/app" }), async ({ port }) => {
      const response = await exchange(port, "/app/users/42", { accept: HTML });
      assert.equal(response.status, 200);
      assert.equal(response.body, "<h1>site</h1>");
      assert.equal((await exchange(port, "/elsewhere/x", { accept: HTML })).status, 200);
    });
  });

  test("serveDir answers 404 when the fallback file itself is missing", async () => {
    await withSite(dir({ fallback: "nope.html" }), async ({ port }) => {
      assert.equal((await exchange(port, "/users/42", { accept: HTML })).status, 404);
    });
  });

  test("serveDir's fallback never leaves the root", async () => {
    await withSite(dir({ fallback: "../secret.txt" }), async ({ port }) => {
      const response = await exchange(port, "/users/42", { accept: HTML });
      assert.notEqual(response.status, 200);
      assert.ok(!response.body.includes(SECRET));
    });
  });
});

//#endregion
//#region The file cache

describe("FileCache", () => {
  test("a held file goes out byte for byte as it does uncached, its headers read or not, and they are all there after it is sent", async () => {
    const sent: Response[] = [];
    const handler = (root: string): Handler => async (request) => {
      const cache = request.headers.has("x-uncached") ? false : undefined;
      const response = await serveDir(request, {
        root,
        cache,
        cors: request.headers.has("x-cors"),
      });
      if (request.headers.has("x-read")) response.headers.get("etag");
      sent.push(response);
      return response;
    };
    await withSite(handler, async ({ port }) => {
      for (const target of ["/hello.txt", "/app.js", "/style.css", "/data.bin"]) {
        const codings: Record<string, string>[] = [{}, { "accept-encoding": "br, gzip" }];
        for (const coding of codings) {
          const uncached = await exchange(port, target, { ...coding, "x-uncached": "1" });
          assert.equal(uncached.status, 200);
          await exchange(port, target, coding); // learnt by the shared cache
          const held = await exchange(port, target, coding);
          const read = await exchange(port, target, { ...coding, "x-read": "1" });
          assert.equal(maskDate(held.raw), maskDate(uncached.raw), target);
          assert.equal(maskDate(read.raw), maskDate(uncached.raw), target);
          // A response sent without its headers read still has every one of them.
          const fields = [...sent[sent.length - 2].headers].map(([name, value]) =>
            `${name}: ${value}`
          );
          const wire = held.raw.slice(held.raw.indexOf("\r\n") + 2, held.raw.indexOf("\r\n\r\n"))
            .split("\r\n").filter((line) => !/^(date|connection):/.test(line));
          // The wire has Content-Length last (the framing's), the Headers in its sorted place.
          assert.deepEqual(fields.toSorted(), wire.toSorted(), target);
        }
      }
      // CORS reads the headers (to add its own) and so takes the other path: the same fields.
      const cors = await exchange(port, "/hello.txt", { "x-cors": "1" });
      assert.equal(cors.headers.get("access-control-allow-origin"), "*");
      assert.equal(cors.headers.get("etag"), `"c-${MTIME.getTime().toString(16)}"`);
    });
  });

  test("a held file's whole response, kept for its second, is what an uncached one would be at every moment, on every kind of request", async () => {
    const clock = new ManualClock();
    const big = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff);
    await withRoot({ "a.txt": "held contents", "b.bin": big }, async (root) => {
      const handler: Handler = (request) =>
        serveDir(request, { root, cache: request.headers.has("x-uncached") ? false : undefined });
      await withServer(memoryServer(handler, { clock }), async ({ connect }) => {
        /** The responses to `head` held and uncached, at this moment of the clock. */
        const both = async (head: string): Promise<[string, string]> => {
          const answers: string[] = [];
          for (const extra of ["", "x-uncached: 1\r\n"]) {
            const connection = connect();
            connection.send(head.replace(/\r\n\r\n$/, `\r\n${extra}\r\n`));
            await waitUntil(() => {
              const text = textOf(connection.writes);
              const end = text.indexOf("\r\n\r\n");
              const length = /content-length: (\d+)/.exec(text);
              return end > 0 && length !== null &&
                (head.startsWith("HEAD") || text.length >= end + 4 + Number(length[1]));
            }, "a response");
            answers.push(textOf(connection.writes));
          }
          return answers as [string, string];
        };
        const get = (target: string, extra = "", version = "1.1") =>
          `GET ${target} HTTP/${version}\r\nhost: h\r\n${extra}\r\n`;
        for (const target of ["/a.txt", "/b.bin"]) {
          // Learnt, then sent from memory: twice in one second, then in each of the next two, and
          // between them the kinds of request that take the other path (HTTP/1.0, a range, HEAD).
          for (
            const [step, head] of [
              [0, get(target)],
              [0, get(target)],
              [0, get(target)],
              [1000, get(target)],
              [0, get(target, "", "1.0")],
              [0, get(target, "connection: keep-alive\r\n", "1.0")],
              [0, get(target)],
              [0, get(target, "range: bytes=2-5\r\n")],
              [0, `HEAD ${target} HTTP/1.1\r\nhost: h\r\n\r\n`],
              [1000, get(target)],
              [0, get(target)],
            ] as const
          ) {
            clock.advance(step);
            const [held, uncached] = await both(head);
            assert.equal(held, uncached, `${target} ${head.split("\r\n")[0]}`);
            assert.ok(held.includes(`date: ${new Date(clock.time).toUTCString()}\r\n`), held);
            if (head.startsWith("GET") && !head.includes("range")) {
              assert.ok(held.endsWith(target === "/b.bin" ? textOf(big) : "held contents"));
            }
          }
        }
      });
    });
  });

  /** A fresh temp root with `files`, every one dated MTIME; removed after `body`. */
  async function withRoot(
    files: Record<string, string | Uint8Array>,
    body: (root: string) => Promise<void>,
  ): Promise<void> {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), "wireserve-cache-"));
    try {
      for (const [name, content] of Object.entries(files)) await put(root, name, content);
      await body(root);
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  }
  /** Writes a file under `root` with modification time `mtime` (MTIME unless given). */
  async function put(root: string, name: string, content: string | Uint8Array, mtime = MTIME) {
    const file = path.join(root, name);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, content);
    await fs.utimes(file, mtime, mtime);
  }
  /** serveDir for a GET of `target`, with `headers`; the body read as text. */
  async function get(
    root: string,
    target: string,
    options: Omit<ServeDirOptions, "root">,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; headers: Headers; body: string }> {
    const response = await serveDir(
      new Request(`http://localhost${target}`, { headers }),
      { root, ...options },
    );
    const body = textOf(new Uint8Array(await response.arrayBuffer()));
    return { status: response.status, headers: response.headers, body };
  }
  const LATER = new Date("2024-03-04T05:06:07Z");

  test("a cached file is answered from memory: a change on disk is not seen until validFor ends", async () => {
    await withRoot({ "a.txt": "first" }, async (root) => {
      const cache = new FileCache({ validFor: 60_000 });
      assert.equal((await get(root, "/a.txt", { cache })).body, "first");
      assert.equal(cache.size, 1);
      assert.equal(cache.byteLength, 5);
      await put(root, "a.txt", "second, longer", LATER);
      const stale = await get(root, "/a.txt", { cache });
      assert.equal(stale.body, "first");
      assert.equal(stale.headers.get("content-length"), "5");
      cache.clear();
      assert.equal(cache.size, 0);
      assert.equal(cache.byteLength, 0);
      assert.equal((await get(root, "/a.txt", { cache })).body, "second, longer");
    });
  });

  test("with validFor: 0 every request asks the file system: a new size or mtime is seen at once", async () => {
    await withRoot({ "a.txt": "first" }, async (root) => {
      const cache = new FileCache({ validFor: 0 });
      assert.equal((await get(root, "/a.txt", { cache })).body, "first");
      await put(root, "a.txt", "FIRST", LATER); // same size, a new mtime
      const changed = await get(root, "/a.txt", { cache });
      assert.equal(changed.body, "FIRST");
      assert.equal(changed.headers.get("last-modified"), LATER.toUTCString());
      await put(root, "a.txt", "longer now", LATER); // a new size, the same mtime
      assert.equal((await get(root, "/a.txt", { cache })).body, "longer now");
    });
  });

  test("revalidation reads a file again only when its size or mtime changed (stat, as nginx)", async () => {
    await withRoot({ "a.txt": "first" }, async (root) => {
      const cache = new FileCache({ validFor: 0 });
      assert.equal((await get(root, "/a.txt", { cache })).body, "first");
      // Rewritten with the same size and the same mtime: the stat cannot tell, the held bytes stay.
      await put(root, "a.txt", "other", MTIME);
      assert.equal((await get(root, "/a.txt", { cache })).body, "first");
      // Without a cache the file is read for every request.
      assert.equal((await get(root, "/a.txt", { cache: false })).body, "other");
    });
  });

  test("with cache: false a change on disk is seen by the next request", async () => {
    await withRoot({ "a.txt": "first" }, async (root) => {
      assert.equal((await get(root, "/a.txt", { cache: false })).body, "first");
      await put(root, "a.txt", "second", LATER);
      assert.equal((await get(root, "/a.txt", { cache: false })).body, "second");
      await fs.rm(path.join(root, "a.txt"));
      assert.equal((await get(root, "/a.txt", { cache: false })).status, 404);
    });
  });

  test("a file removed, or its directory replaced, is seen once validFor ends", async () => {
    await withRoot({ "a.txt": "first", "d/i.txt": "in d" }, async (root) => {
      const cache = new FileCache({ validFor: 0 });
      assert.equal((await get(root, "/a.txt", { cache })).status, 200);
      assert.equal((await get(root, "/d/i.txt", { cache })).status, 200);
      await fs.rm(path.join(root, "a.txt"));
      await fs.rm(path.join(root, "d"), { recursive: true });
      await put(root, "d", "now a file");
      assert.equal((await get(root, "/a.txt", { cache })).status, 404);
      assert.equal((await get(root, "/d/i.txt", { cache })).status, 404);
      assert.equal(cache.size, 0);
    });
  });

  test("a file over maxFileBytes is remembered without its contents and read for each response", async () => {
    await withRoot({ "big.txt": "x".repeat(100), "small.txt": "s" }, async (root) => {
      const cache = new FileCache({ maxFileBytes: 10, validFor: 60_000 });
      assert.equal((await get(root, "/big.txt", { cache })).body, "x".repeat(100));
      assert.equal((await get(root, "/small.txt", { cache })).body, "s");
      assert.equal(cache.size, 2);
      assert.equal(cache.byteLength, 1);
      await put(root, "big.txt", "y".repeat(50), LATER);
      const fresh = await get(root, "/big.txt", { cache });
      assert.equal(fresh.body, "y".repeat(50));
      assert.equal(fresh.headers.get("content-length"), "50");
      // Removed while remembered: opened for the response, it is not there, so it is found again.
      await fs.rm(path.join(root, "big.txt"));
      assert.equal((await get(root, "/big.txt", { cache })).status, 404);
      assert.equal(cache.size, 1);
    });
  });

  test("maxEntries forgets the least recently used file first", async () => {
    await withRoot({ "a.txt": "a", "b.txt": "b", "c.txt": "c" }, async (root) => {
      const cache = new FileCache({ maxEntries: 2, validFor: 60_000 });
      await get(root, "/a.txt", { cache });
      await get(root, "/b.txt", { cache });
      await get(root, "/a.txt", { cache }); // a is now the most recently used
      await get(root, "/c.txt", { cache }); // b goes
      assert.equal(cache.size, 2);
      await put(root, "a.txt", "A2", LATER);
      await put(root, "b.txt", "B2", LATER);
      assert.equal((await get(root, "/a.txt", { cache })).body, "a", "a is still held");
      assert.equal((await get(root, "/b.txt", { cache })).body, "B2", "b was forgotten");
    });
  });

  test("a new file gets in when every file held was used since (CLOCK's second chance)", async () => {
    await withRoot({ "a.txt": "a", "b.txt": "b", "c.txt": "c" }, async (root) => {
      const cache = new FileCache({ maxEntries: 2, validFor: 60_000 });
      for (const name of ["a", "b", "a", "b", "c"]) await get(root, `/${name}.txt`, { cache });
      assert.equal(cache.size, 2);
      await put(root, "a.txt", "A2", LATER);
      await put(root, "b.txt", "B2", LATER);
      await put(root, "c.txt", "C2", LATER);
      assert.equal((await get(root, "/c.txt", { cache })).body, "c", "the new file is held");
      // Both had been used: each got a second chance, then a, the oldest, went for c.
      assert.equal((await get(root, "/a.txt", { cache })).body, "A2", "a was forgotten");
    });
  });

  test("maxBytes bounds the contents held over all files", async () => {
    const files = { "1.bin": "1".repeat(100), "2.bin": "2".repeat(100), "3.bin": "3".repeat(100) };
    await withRoot(files, async (root) => {
      const cache = new FileCache({ maxBytes: 250, validFor: 60_000 });
      for (const name of Object.keys(files)) {
        assert.equal((await get(root, `/${name}`, { cache })).body.length, 100);
        assert.ok(cache.byteLength <= 250, `${cache.byteLength} bytes held`);
      }
      assert.equal(cache.size, 2);
      assert.equal(cache.byteLength, 200);
    });
  });

  test("precompressed siblings are remembered with the file: one added later is seen after validFor", async () => {
    await withRoot({ "app.js": "identity", "app.js.br": "BR" }, async (root) => {
      const cache = new FileCache({ validFor: 60_000 });
      const br = await get(root, "/app.js", { cache }, { "accept-encoding": "br, gzip" });
      assert.equal(br.headers.get("content-encoding"), "br");
      assert.equal(br.body, "BR");
      const gzipOnly = await get(root, "/app.js", { cache }, { "accept-encoding": "gzip" });
      assert.equal(gzipOnly.headers.get("content-encoding"), null);
      assert.equal(gzipOnly.body, "identity");
      assert.equal(gzipOnly.headers.get("vary"), "Accept-Encoding");
      assert.equal(cache.byteLength, "identity".length + 2);
      await put(root, "app.js.gz", "GZ");
      const still = await get(root, "/app.js", { cache }, { "accept-encoding": "gzip" });
      assert.equal(still.body, "identity");
      cache.clear();
      const gz = await get(root, "/app.js", { cache }, { "accept-encoding": "gzip" });
      assert.equal(gz.headers.get("content-encoding"), "gzip");
      assert.equal(gz.body, "GZ");
    });
  });

  test("ranges, validators and HEAD are answered from held contents as from disk", async () => {
    await withRoot({ "data.bin": bytesOf(DATA) }, async (root) => {
      const cache = new FileCache({ validFor: 60_000 });
      const first = await get(root, "/data.bin", { cache });
      assert.equal(first.body, DATA);
      const etag = first.headers.get("etag") as string;
      const one = await get(root, "/data.bin", { cache }, { range: "bytes=10-19" });
      assert.equal(one.status, 206);
      assert.equal(one.headers.get("content-range"), "bytes 10-19/10000");
      assert.equal(one.body, DATA.slice(10, 20));
      const many = await get(root, "/data.bin", { cache }, { range: "bytes=0-1,5000-5002" });
      assert.equal(many.status, 206);
      assert.ok(many.body.includes(DATA.slice(0, 2)) && many.body.includes(DATA.slice(5000, 5003)));
      const notModified = await get(root, "/data.bin", { cache }, { "if-none-match": etag });
      assert.equal(notModified.status, 304);
      const head = await serveDir(new Request("http://localhost/data.bin", { method: "HEAD" }), {
        root,
        cache,
      });
      assert.equal(head.headers.get("content-length"), "10000");
      assert.equal(await head.text(), "");
    });
  });

  test("a body read and written to by a handler leaves the held contents as they were", async () => {
    await withRoot({ "a.txt": "pristine" }, async (root) => {
      const cache = new FileCache({ validFor: 60_000 });
      const response = await serveDir(new Request("http://localhost/a.txt"), { root, cache });
      new Uint8Array(await response.arrayBuffer()).fill(0x21);
      const streamed = await serveDir(new Request("http://localhost/a.txt"), { root, cache });
      const reader = (streamed.body as ReadableStream<Uint8Array>).getReader();
      const chunk = await reader.read();
      (chunk.value as Uint8Array).fill(0x21);
      assert.equal((await get(root, "/a.txt", { cache })).body, "pristine");
    });
  });

  test("the index file of a directory is remembered under the directory's URL", async () => {
    await withRoot({ "docs/index.html": "<p>docs</p>" }, async (root) => {
      const cache = new FileCache({ validFor: 0 });
      assert.equal((await get(root, "/docs/", { cache })).body, "<p>docs</p>");
      assert.equal(cache.size, 1);
      await fs.rm(path.join(root, "docs", "index.html"));
      const listing = await get(root, "/docs/", { cache, listing: true });
      assert.match(listing.body, /Index of \/docs\//);
      assert.equal(cache.size, 0);
    });
  });

  test("a symlink pointed outside the root is refused once validFor ends", async () => {
    await withRoot({ "root/in.txt": "inside", "secret.txt": SECRET }, async (dir) => {
      const root = path.join(dir, "root");
      await fs.symlink("in.txt", path.join(root, "link.txt"));
      const cache = new FileCache({ validFor: 0 });
      assert.equal((await get(root, "/link.txt", { cache })).body, "inside");
      await fs.rm(path.join(root, "link.txt"));
      await fs.symlink("../secret.txt", path.join(root, "link.txt"));
      const outside = await get(root, "/link.txt", { cache });
      assert.equal(outside.status, 404);
      assert.ok(!outside.body.includes(SECRET));
    });
  });

  test("requests during a revalidation are answered from the entry they revalidate", async () => {
    await withRoot({ "a.txt": "first" }, async (root) => {
      const cache = new FileCache({ validFor: 0 });
      await get(root, "/a.txt", { cache });
      await put(root, "a.txt", "second", LATER);
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => get(root, "/a.txt", { cache })),
      );
      // The first asks the file system; the others may get the entry it is replacing, whole.
      for (const { status, body, headers } of answers) {
        assert.equal(status, 200);
        assert.ok(body === "first" || body === "second", body);
        assert.equal(headers.get("content-length"), String(body.length));
      }
      assert.equal(answers[0].body, "second");
      assert.equal((await get(root, "/a.txt", { cache })).body, "second");
    });
  });

  test("serveFile shares the cache, keyed by the path it is given", async () => {
    await withRoot({ "f.txt": "file" }, async (root) => {
      const cache = new FileCache({ validFor: 60_000 });
      const file = path.join(root, "f.txt");
      const text = async () =>
        await (await serveFile(new Request("http://localhost/"), file, { cache })).text();
      assert.equal(await text(), "file");
      await put(root, "f.txt", "changed", LATER);
      assert.equal(await text(), "file");
      assert.equal(cache.size, 1);
      cache.clear();
      assert.equal(await text(), "changed");
    });
  });

  test("options that cannot bound a cache are refused", async () => {
    for (const name of ["maxEntries", "maxBytes", "maxFileBytes", "validFor"]) {
      for (const value of [-1, Number.NaN, "10" as unknown as number]) {
        assert.throws(() => new FileCache({ [name]: value }), RangeError, `${name}: ${value}`);
      }
    }
    await assert.rejects(
      serveDir(new Request("http://localhost/"), { root: ".", cache: {} as FileCache }),
      TypeError,
    );
  });
});

//#endregion

//#region under the runtime's own server

// serveDir and serveFile are fetch handlers: under Deno.serve and Bun.serve, which send a
// Response's own body (not what a subclass's methods return), they must answer the same bytes.
const native = nativeServe();
if (native !== null) {
  describe(`serveDir and serveFile under ${runtimeName() === "deno" ? "Deno.serve" : "Bun.serve"}`, () => {
    test("small files (from the cache, whole, as ranges and as HEAD) and a large streamed one arrive whole", async () => {
      const root = await fs.mkdtemp(path.join(os.tmpdir(), "wireserve-native-"));
      const small = "small file\n".repeat(100); // 1,100 bytes: kept in the cache
      const large = new Uint8Array(200 * 1024).map((_, i) => i % 251); // past maxFileBytes: streamed
      await fs.writeFile(path.join(root, "small.txt"), small);
      await fs.writeFile(path.join(root, "large.bin"), large);
      const cache = new FileCache();
      const server = await native((request) =>
        new URL(request.url).pathname === "/file"
          ? serveFile(request, path.join(root, "small.txt"), { cache })
          : serveDir(request, { root, cache })
      );
      const url = (target: string) => `http://127.0.0.1:${server.port}${target}`;
      try {
        for (let round = 0; round < 2; round++) { // the second round comes from the cache
          const response = await fetch(url("/small.txt"));
          assert.equal(response.status, 200);
          assert.equal(response.headers.get("content-length"), String(small.length));
          assert.equal(await response.text(), small, `round ${round}`);
        }
        const range = await fetch(url("/small.txt"), { headers: { range: "bytes=5-8" } });
        assert.equal(range.status, 206);
        assert.equal(range.headers.get("content-range"), `bytes 5-8/${small.length}`);
        assert.equal(await range.text(), small.slice(5, 9));
        const head = await fetch(url("/small.txt"), { method: "HEAD" });
        assert.equal(head.status, 200);
        assert.equal(head.headers.get("content-length"), String(small.length));
        assert.equal(await head.text(), "");
        const file = await fetch(url("/file"));
        assert.equal(await file.text(), small);
        const big = await fetch(url("/large.bin"));
        assert.equal(big.status, 200);
        assert.deepEqual(new Uint8Array(await big.arrayBuffer()), large);
      } finally {
        await server.close();
        await fs.rm(root, { recursive: true, force: true });
      }
    });
  });
}

//#endregion
