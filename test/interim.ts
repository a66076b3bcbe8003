/**
 * Tests of `sendEarlyHints` (RFC 8297): the exact bytes through the in-memory driver (order with
 * 100 Continue and pipelined responses, HTTP/1.0, calls too late, requests from elsewhere), then
 * real clients over every transport: curl, Node's `http` client (its `'information'` event, in a
 * Node process of its own) and headless Chromium, which parses a 103 on HTTP/1.1 but acts on
 * hints only over HTTP/2 and later.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { sendEarlyHints } from "../mod.ts";
import type { Handler } from "../mod.ts";
import {
  delay,
  expectOutput,
  gate,
  harness,
  memoryServer,
  runCommand,
  startProcess,
  textResponse,
  transportsHere,
  waitUntil,
} from "./helpers.ts";

const HINT = "</style.css>; rel=preload; as=style";
const EARLY_HINTS = `HTTP/1.1 103 Early Hints\r\nlink: ${HINT}\r\n\r\n`;

/** The 200 the in-memory tests answer, with the Date masked as expectOutput masks it. */
function okText(body: string): string {
  return "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\n" +
    `content-length: ${body.length}\r\n\r\n${body}`;
}

describe("sendEarlyHints through the driver", () => {
  test("a 103 with the Link goes out before the final response (RFC 8297 §2)", async () => {
    const results: boolean[] = [];
    const { server, connect } = memoryServer(async (request) => {
      results.push(sendEarlyHints(request, { link: HINT }));
      await delay(5);
      return textResponse("page");
    });
    const connection = connect();
    connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await waitUntil(() => connection.output().length > 0, "the 103");
    assert.equal(connection.output(), EARLY_HINTS, "sent at once, before the handler returns");
    await expectOutput(connection, EARLY_HINTS + okText("page"), false);
    assert.deepEqual(results, [true]);
    await server.shutdown();
  });

  test("several calls send several 103s; hop-by-hop fields are dropped", async () => {
    const { server, connect } = memoryServer((request) => {
      sendEarlyHints(request, [["link", HINT], ["connection", "close"], ["content-length", "5"]]);
      sendEarlyHints(request, { link: "</app.js>; rel=preload; as=script" });
      return textResponse("page");
    });
    const connection = connect();
    connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await expectOutput(
      connection,
      EARLY_HINTS +
        "HTTP/1.1 103 Early Hints\r\nlink: </app.js>; rel=preload; as=script\r\n\r\n" +
        okText("page"),
      false,
    );
    await server.shutdown();
  });

  test("an HTTP/1.0 request gets none (RFC 9110 §15.2)", async () => {
    let result: boolean | undefined;
    const { server, connect } = memoryServer((request) => {
      result = sendEarlyHints(request, { link: HINT });
      return textResponse("page");
    });
    const connection = connect();
    connection.send("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
    // HTTP/1.0 without keep-alive: the response closes the connection.
    await expectOutput(
      connection,
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\n" +
        "content-length: 4\r\nconnection: close\r\n\r\npage",
      true,
    );
    assert.equal(result, false);
    await server.shutdown();
  });

  test("once the response has begun, or on a later request, it is a no-op", async () => {
    const requests: Request[] = [];
    const late: boolean[] = [];
    const { server, connect } = memoryServer((request) => {
      requests.push(request);
      return textResponse("page");
    });
    const connection = connect();
    connection.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    await waitUntil(() => connection.output().endsWith("page"), "the first response");
    late.push(sendEarlyHints(requests[0], { link: HINT }));
    connection.send("GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    await waitUntil(() => requests.length === 2, "the second request");
    late.push(sendEarlyHints(requests[0], { link: HINT })); // the first request, while the second is answered
    await expectOutput(connection, okText("page") + okText("page"), false);
    assert.deepEqual(late, [false, false]);
    await server.shutdown();
  });

  test("a request serve() did not parse gets none, and no error", () => {
    assert.equal(sendEarlyHints(new Request("http://elsewhere/"), { link: HINT }), false);
  });

  test("an invalid field is a TypeError", async () => {
    let thrown: unknown;
    const { server, connect } = memoryServer((request) => {
      try {
        sendEarlyHints(request, [["li nk", HINT]]);
      } catch (error) {
        thrown = error;
      }
      return textResponse("page");
    });
    const connection = connect();
    connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await expectOutput(connection, okText("page"), false);
    assert.ok(thrown instanceof TypeError, String(thrown));
    await server.shutdown();
  });

  test("pipelined: the hints come after the earlier response and before their own", async () => {
    const first = gate();
    const { server, connect } = memoryServer(async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/1") {
        await first.opened;
        return textResponse("one");
      }
      sendEarlyHints(request, { link: HINT });
      await delay(5);
      return textResponse("two");
    });
    const connection = connect();
    connection.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    await delay(10);
    assert.equal(connection.output(), "", "nothing before the first response");
    first.open();
    await expectOutput(connection, okText("one") + EARLY_HINTS + okText("two"), false);
    await server.shutdown();
  });

  test("with Expect: 100-continue, the 103 and the 100 both come before the final response", async () => {
    const { server, connect } = memoryServer(async (request) => {
      sendEarlyHints(request, { link: HINT });
      return textResponse(await request.text());
    });
    const connection = connect();
    connection.send(
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    await waitUntil(() => connection.output().includes("100 Continue"), "the 100 Continue");
    connection.send("body");
    await expectOutput(
      connection,
      EARLY_HINTS + "HTTP/1.1 100 Continue\r\n\r\n" + okText("body"),
      false,
    );
    await server.shutdown();
  });
});

const NODE = fileURLToPath(new URL("../node_modules/.bin/node", import.meta.url));
const INFORMATION_CLIENT = fileURLToPath(
  new URL("./fixtures/information_client.mjs", import.meta.url),
);

/** Sends a 103 with the Link, waits a moment as a page being rendered would, answers HTML. */
const hintedPage: Handler = async (request) => {
  const path = new URL(request.url).pathname;
  if (path === "/style.css") {
    return new Response("body { color: rgb(1, 2, 3); }", {
      headers: { "content-type": "text/css" },
    });
  }
  if (path !== "/") return new Response("not found", { status: 404 });
  sendEarlyHints(request, { link: HINT });
  await delay(50);
  return new Response(
    '<!doctype html><html><head><link rel="stylesheet" href="/style.css"></head>' +
      "<body><p id=p>hinted page</p></body></html>",
    { headers: { "content-type": "text/html; charset=utf-8" } },
  );
};

for (const transport of transportsHere()) {
  describe(`sendEarlyHints to real clients over ${transport}`, () => {
    test("curl -v shows the 103 and then the 200", async () => {
      await harness(transport, hintedPage, {}, async (h) => {
        const out = await runCommand("curl", [
          "-sS",
          "-v",
          "--stderr",
          "-",
          "--http1.1",
          `http://127.0.0.1:${h.port}/`,
        ]);
        assert.match(
          out,
          /< HTTP\/1\.1 103 Early Hints\r?\n< link: <\/style\.css>; rel=preload; as=style/,
        );
        assert.ok(
          out.indexOf("103 Early Hints") < out.indexOf("HTTP/1.1 200 OK"),
          "the 103 comes first",
        );
        assert.match(out, /hinted page/);
      });
    });

    test("Node's http client emits 'information' with the Link", async () => {
      await harness(transport, hintedPage, {}, async (h) => {
        const client = startProcess(NODE, [INFORMATION_CLIENT, `http://127.0.0.1:${h.port}/`], {
          ms: 10_000,
        });
        const exit = await client.exited;
        assert.equal(exit.code, 0, exit.stderr);
        const result = JSON.parse(exit.stdout.trim());
        assert.deepEqual(result.informational, [{ status: 103, link: HINT }]);
        assert.equal(result.status, 200);
        assert.match(result.body, /hinted page/);
      });
    });
  });
}
