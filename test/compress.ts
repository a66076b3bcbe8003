/**
 * Tests of `compress`: the rules that decide whether a response is compressed (called directly,
 * no server), then over the wire on every transport: each coding decoded by `node:zlib` and by
 * curl, server-sent events arriving event by event, backpressure through the compressor, static
 * files with precompressed siblings, and the middleware under the runtime's own server.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { compress, FastResponse, serveDir } from "../mod.ts";
import type { CompressionCoding, CompressOptions, ConnInfo } from "../mod.ts";
import {
  bytesOf,
  delay,
  field,
  gate,
  harness,
  nativeServe,
  parseResponses,
  runCommand,
  runtimeName,
  transportsHere,
  waitUntil,
} from "./helpers.ts";

const INFO = {} as ConnInfo;
/** 5,581 bytes of JSON: well over the threshold, and very compressible. */
const JSON_TEXT = JSON.stringify(
  Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}` })),
);
const CODINGS: CompressionCoding[] = ["gzip", "br", "zstd"];

/** Decodes a whole body in `coding`. */
function decode(coding: string, bytes: Uint8Array): string {
  const decoded = coding === "gzip"
    ? zlib.gunzipSync(bytes)
    : coding === "br"
    ? zlib.brotliDecompressSync(bytes)
    : zlib.zstdDecompressSync(bytes);
  return new TextDecoder().decode(decoded);
}

/** A streaming decoder: what has been decoded so far of the bytes written to it. */
function streamingDecoder(coding: string): { write(bytes: Uint8Array): void; text: () => string } {
  const stream = coding === "gzip"
    ? zlib.createGunzip()
    : coding === "br"
    ? zlib.createBrotliDecompress()
    : zlib.createZstdDecompress();
  let text = "";
  const decoder = new TextDecoder();
  stream.on("data", (chunk: Uint8Array) => text += decoder.decode(chunk, { stream: true }));
  stream.on("error", () => {});
  return { write: (bytes) => void stream.write(bytes), text: () => text };
}

/** Runs `handler` through compress with `acceptEncoding`, as a server would. */
async function through(
  acceptEncoding: string | null,
  response: Response,
  init: { method?: string; options?: CompressOptions } = {},
): Promise<Response> {
  const headers = acceptEncoding === null ? undefined : { "accept-encoding": acceptEncoding };
  const request = new Request("http://test/", { method: init.method ?? "GET", headers });
  return await compress(() => response, init.options)(request, INFO);
}

function json(body = JSON_TEXT, headers: Record<string, string> = {}): Response {
  return new Response(body, { headers: { "content-type": "application/json", ...headers } });
}

describe("compress: which coding (RFC 9110 §12.5.3)", () => {
  const cases: Array<[string | null, string | null]> = [
    ["gzip", "gzip"],
    ["br", "br"],
    ["zstd", "zstd"],
    ["gzip, deflate, br, zstd", "br"], // a browser: ties go to the server's order
    ["gzip, zstd", "zstd"],
    ["gzip;q=0.5, br;q=0.8", "br"],
    ["br;q=0.2, gzip;q=0.9", "gzip"],
    ["br;q=0, gzip", "gzip"],
    ["x-gzip", "gzip"],
    ["*", "br"],
    ["*;q=0", null],
    ["identity", null],
    ["identity;q=1, gzip;q=0.5", null],
    ["deflate", null],
    ["", null],
    [null, null],
  ];
  for (const [accept, expected] of cases) {
    test(`Accept-Encoding ${JSON.stringify(accept)} gets ${expected ?? "identity"}`, async () => {
      const response = await through(accept, json());
      assert.equal(response.headers.get("content-encoding"), expected);
      assert.equal(response.headers.get("vary"), "Accept-Encoding");
      const bytes = new Uint8Array(await response.arrayBuffer());
      const text = expected === null ? new TextDecoder().decode(bytes) : decode(expected, bytes);
      assert.equal(text, JSON_TEXT);
      if (expected !== null) {
        assert.ok(bytes.length < JSON_TEXT.length / 3, `${bytes.length} bytes`);
      }
    });
  }

  test("encodings sets the server's order and what it offers", async () => {
    const options: CompressOptions = { encodings: ["gzip"] };
    const response = await through("br, gzip", json(), { options });
    assert.equal(response.headers.get("content-encoding"), "gzip");
    const none = await through("br", json(), { options });
    assert.equal(none.headers.get("content-encoding"), null);
  });

  test("options out of range are refused", () => {
    assert.throws(() => compress(() => json(), { minBytes: -1 }), RangeError);
    assert.throws(() => compress(() => json(), { level: { gzip: 10 } }), RangeError);
    assert.throws(() => compress(() => json(), { level: { br: 12 } }), RangeError);
    assert.throws(
      () => compress(() => json(), { encodings: ["deflate" as CompressionCoding] }),
      RangeError,
    );
  });
});

describe("compress: what is left as it is", () => {
  const untouched: Array<[string, () => Response, string?]> = [
    ["a 204", () => new Response(null, { status: 204, headers: { "content-type": "text/plain" } })],
    ["a 304", () => new Response(null, { status: 304, headers: { "content-type": "text/plain" } })],
    [
      "a 206",
      () =>
        new Response(JSON_TEXT, { status: 206, headers: { "content-type": "application/json" } }),
    ],
    ["a Content-Range on a 200", () =>
      new Response(JSON_TEXT, {
        status: 200,
        headers: { "content-type": "application/json", "content-range": "bytes 0-5580/5581" },
      })],
    ["an encoded body", () => json(JSON_TEXT, { "content-encoding": "gzip" })],
    [
      "Cache-Control: no-transform",
      () => json(JSON_TEXT, { "cache-control": "public, no-transform" }),
    ],
    ["an image", () => new Response(JSON_TEXT, { headers: { "content-type": "image/png" } })],
    ["a video", () => new Response(JSON_TEXT, { headers: { "content-type": "video/mp4" } })],
    ["a zip", () => new Response(JSON_TEXT, { headers: { "content-type": "application/zip" } })],
    ["no Content-Type", () => new Response(new TextEncoder().encode(JSON_TEXT))],
  ];
  for (const [name, make] of untouched) {
    test(`${name} is not compressed`, async () => {
      const original = make();
      const response = await through("gzip", original);
      assert.equal(response, original, "the same Response object");
      assert.equal(response.headers.get("vary"), null);
    });
  }

  test("a HEAD request is not compressed", async () => {
    const original = json();
    assert.equal(await through("gzip", original, { method: "HEAD" }), original);
  });

  test("a whole body under minBytes is sent as it is, with Vary", async () => {
    const response = await through("gzip", json("x".repeat(511), {}));
    assert.equal(response.headers.get("content-encoding"), null);
    assert.equal(response.headers.get("vary"), "Accept-Encoding");
    assert.equal(await response.text(), "x".repeat(511));
    const at = await through(
      "gzip",
      new Response("x".repeat(512), { headers: { "content-type": "text/plain" } }),
    );
    assert.equal(at.headers.get("content-encoding"), "gzip");
  });

  test("a declared Content-Length under minBytes is sent as it is, unread", async () => {
    const original = json("{}", { "content-length": "2" });
    const response = await through("gzip", original);
    assert.equal(response.headers.get("content-encoding"), null);
    assert.equal(response.headers.get("vary"), "Accept-Encoding");
    assert.equal(response.bodyUsed, false);
  });

  test("a custom compressible says which types", async () => {
    const options: CompressOptions = { compressible: (type) => type === "image/png" };
    const png = await through(
      "gzip",
      new Response(JSON_TEXT, { headers: { "content-type": "image/png" } }),
      { options },
    );
    assert.equal(png.headers.get("content-encoding"), "gzip");
    const text = await through("gzip", json(), { options });
    assert.equal(text.headers.get("content-encoding"), null);
  });

  test("text, JSON, JavaScript, XML, SVG, wasm and +json types are compressed", async () => {
    for (
      const type of [
        "text/html; charset=utf-8",
        "text/css",
        "TEXT/PLAIN",
        "application/javascript",
        "application/xml",
        "image/svg+xml",
        "application/wasm",
        "application/problem+json",
        "application/atom+xml",
      ]
    ) {
      const response = await through(
        "gzip",
        new Response(JSON_TEXT, { headers: { "content-type": type } }),
      );
      assert.equal(response.headers.get("content-encoding"), "gzip", type);
    }
  });
});

describe("compress: the fields of a compressed response", () => {
  test("Content-Length and Accept-Ranges go, a strong ETag becomes weak, status and others stay", async () => {
    const response = await through(
      "gzip",
      new Response(JSON_TEXT, {
        status: 201,
        statusText: "Made",
        headers: {
          "content-type": "application/json",
          "content-length": String(JSON_TEXT.length),
          "accept-ranges": "bytes",
          etag: '"v1"',
          "x-custom": "kept",
        },
      }),
    );
    assert.equal(response.status, 201);
    assert.equal(response.statusText, "Made");
    assert.equal(response.headers.get("content-length"), null);
    assert.equal(response.headers.get("accept-ranges"), null);
    assert.equal(response.headers.get("etag"), 'W/"v1"');
    assert.equal(response.headers.get("x-custom"), "kept");
  });

  test("a weak ETag stays as it is", async () => {
    const response = await through("gzip", json(JSON_TEXT, { etag: 'W/"v1"' }));
    assert.equal(response.headers.get("etag"), 'W/"v1"');
  });

  test("Vary is added to, never duplicated, and * is left alone", async () => {
    const origin = await through("gzip", json(JSON_TEXT, { vary: "Origin" }));
    assert.equal(origin.headers.get("vary"), "Origin, Accept-Encoding");
    const already = await through("gzip", json(JSON_TEXT, { vary: "accept-encoding" }));
    assert.equal(already.headers.get("vary"), "accept-encoding");
    const star = await through(null, json(JSON_TEXT, { vary: "*" }));
    assert.equal(star.headers.get("vary"), "*");
  });

  test("a FastResponse is compressed from its bytes", async () => {
    const response = await through("br", FastResponse.json(JSON.parse(JSON_TEXT)));
    assert.equal(response.headers.get("content-encoding"), "br");
    assert.equal(decode("br", new Uint8Array(await response.arrayBuffer())), JSON_TEXT);
  });

  test("a body stream that fails fails the compressed stream", async () => {
    let sent = false;
    const failing = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (!sent) {
          sent = true;
          controller.enqueue(bytesOf("x".repeat(600)));
          return;
        }
        await delay(5);
        controller.error(new Error("source broke"));
      },
    });
    // Failing before the first chunk is compressed rejects the middleware (the server then
    // answers 500); failing later errors the compressed stream (the server cuts the response).
    await assert.rejects(async () => {
      const response = await through(
        "gzip",
        new Response(failing, { headers: { "content-type": "text/plain" } }),
      );
      assert.equal(response.headers.get("content-encoding"), "gzip");
      await response.arrayBuffer();
    }, /source broke/);
  });
});

/** The body bytes of the (possibly incomplete) response in `text`, and whether it is complete. */
function bodyOf(
  text: string,
):
  | { status: number; headers: Array<[string, string]>; bytes: Uint8Array; complete: boolean }
  | null {
  const response = parseResponses(text).responses[0];
  if (response === undefined) return null;
  return { ...response, bytes: bytesOf(response.body) };
}

for (const transport of transportsHere()) {
  describe(`compress over ${transport}`, () => {
    for (const coding of CODINGS) {
      test(`${coding}: a whole JSON body, decoded by node:zlib and by curl`, async () => {
        await harness(transport, compress(() => json()), {}, async (h) => {
          const text = await h.exchange(
            `GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: ${coding}\r\nConnection: close\r\n\r\n`,
          );
          const response = parseResponses(text).responses[0];
          assert.equal(response?.status, 200, text.slice(0, 200));
          assert.equal(field(response, "content-encoding"), coding);
          assert.equal(field(response, "content-length"), String(response.body.length));
          assert.equal(decode(coding, bytesOf(response.body)), JSON_TEXT);
          const curled = await runCommand("curl", [
            "-sS",
            "--http1.1",
            "--compressed",
            "-H",
            `Accept-Encoding: ${coding}`,
            `http://127.0.0.1:${h.port}/`,
          ]);
          assert.equal(curled, JSON_TEXT);
        });
      });

      test(`${coding}: server-sent events arrive event by event`, async () => {
        const next = gate();
        const handler = compress(() =>
          new Response(
            new ReadableStream<Uint8Array>({
              async start(controller) {
                controller.enqueue(bytesOf("data: one\n\n"));
                await next.opened;
                controller.enqueue(bytesOf("data: two\n\n"));
                controller.close();
              },
            }),
            { headers: { "content-type": "text/event-stream" } },
          )
        );
        await harness(transport, handler, {}, async (h) => {
          const client = await h.connect();
          await client.write(
            `GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: ${coding}\r\n\r\n`,
          );
          const decoder = streamingDecoder(coding);
          let fed = 0;
          const feed = () => {
            const body = bodyOf(client.text());
            if (body !== null && body.bytes.length > fed) {
              decoder.write(body.bytes.subarray(fed));
              fed = body.bytes.length;
            }
            return body;
          };
          await waitUntil(
            () => (feed(), decoder.text() === "data: one\n\n"),
            "the first event, decoded",
          );
          const head = feed();
          assert.equal(head?.status, 200);
          assert.equal(head?.headers.find(([name]) => name === "content-encoding")?.[1], coding);
          assert.equal(
            head?.headers.find(([name]) => name === "transfer-encoding")?.[1],
            "chunked",
          );
          assert.equal(head?.complete, false, "the body goes on");
          next.open();
          await waitUntil(() => feed()?.complete === true, "the end of the body");
          await waitUntil(() => decoder.text() === "data: one\n\ndata: two\n\n", "both events");
        });
      });
    }

    test("backpressure holds through the compressor: a client that does not read stops the source", async () => {
      let pulled = 0;
      const piece = () => {
        // Hex digits of random bytes: text that gzip brings to about half.
        const random = crypto.getRandomValues(new Uint8Array(16384));
        let text = "";
        for (const byte of random) text += byte.toString(16).padStart(2, "0");
        return bytesOf(text);
      };
      const handler = compress(() =>
        new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              const bytes = piece();
              pulled += bytes.length;
              controller.enqueue(bytes);
            },
          }, { highWaterMark: 0 }),
          { headers: { "content-type": "text/plain" } },
        )
      );
      await harness(transport, handler, {}, async (h) => {
        const client = await h.connect();
        client.socket.pause();
        await client.write("GET /endless HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n");
        await waitUntil(() => pulled > 0, "the source to be read");
        // Socket buffers on both sides hold a few MB at most; the source is 32 KiB a pull.
        let before = -1;
        for (let i = 0; i < 40 && pulled !== before; i++) {
          before = pulled;
          await delay(100);
        }
        assert.equal(pulled, before, "the source stopped being read");
        assert.ok(pulled < 24 * 1024 * 1024, `the source was read for ${pulled} bytes`);
        client.socket.resume();
        const stalled = pulled;
        await waitUntil(
          () => pulled > stalled + 1024 * 1024,
          "reading to go on once the client reads",
        );
      });
    });

    test("a static file's precompressed sibling is not compressed twice; a plain file is", async () => {
      const root = await fs.mkdtemp(path.join(os.tmpdir(), "wireserve-compress-"));
      try {
        const script = "console.log('hello');\n".repeat(100);
        const brotli = zlib.brotliCompressSync(bytesOf(script));
        await fs.writeFile(path.join(root, "app.js"), script);
        await fs.writeFile(path.join(root, "app.js.br"), brotli);
        await fs.writeFile(path.join(root, "notes.txt"), "notes\n".repeat(500));
        const handler = compress((request) => serveDir(request, { root }));
        await harness(transport, handler, {}, async (h) => {
          const sibling = parseResponses(
            await h.exchange(
              "GET /app.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip\r\nConnection: close\r\n\r\n",
            ),
          ).responses[0];
          assert.equal(field(sibling, "content-encoding"), "br");
          assert.deepEqual(bytesOf(sibling.body), new Uint8Array(brotli));
          assert.equal(field(sibling, "etag")?.startsWith('"'), true, "its own strong ETag");
          const plain = parseResponses(
            await h.exchange(
              "GET /notes.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
            ),
          ).responses[0];
          assert.equal(field(plain, "content-encoding"), "gzip");
          assert.equal(field(plain, "etag")?.startsWith('W/"'), true, "a weak ETag");
          assert.equal(field(plain, "accept-ranges"), undefined);
          assert.equal(decode("gzip", bytesOf(plain.body)), "notes\n".repeat(500));
          const range = parseResponses(
            await h.exchange(
              "GET /notes.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nRange: bytes=0-5\r\nConnection: close\r\n\r\n",
            ),
          ).responses[0];
          assert.equal(range.status, 206);
          assert.equal(field(range, "content-encoding"), undefined);
          assert.equal(range.body, "notes\n");
        });
      } finally {
        await fs.rm(root, { recursive: true, force: true });
      }
    });
  });
}

const native = nativeServe();
if (native !== null) {
  describe(`compress under ${runtimeName() === "deno" ? "Deno.serve" : "Bun.serve"}`, () => {
    test("gzip and brotli responses decode, and a small one is left alone", async () => {
      const handler = compress((request: Request) =>
        new URL(request.url).pathname === "/small" ? json("{}") : json()
      );
      const server = await native((request) => handler(request, INFO));
      try {
        for (const coding of ["gzip", "br"]) {
          const text = await runCommand("curl", [
            "-sS",
            "-i",
            "--raw",
            "-H",
            `Accept-Encoding: ${coding}`,
            `http://127.0.0.1:${server.port}/`,
          ]);
          assert.match(text, new RegExp(`content-encoding: ${coding}`, "i"));
          const curled = await runCommand("curl", [
            "-sS",
            "--compressed",
            "-H",
            `Accept-Encoding: ${coding}`,
            `http://127.0.0.1:${server.port}/`,
          ]);
          assert.equal(curled, JSON_TEXT);
        }
        const small = await fetch(`http://127.0.0.1:${server.port}/small`, {
          headers: { "accept-encoding": "gzip" },
        });
        assert.equal(small.headers.get("content-encoding"), null);
        assert.equal(await small.text(), "{}");
      } finally {
        await server.close();
      }
    });
  });
}
