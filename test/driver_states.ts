// The driver's states and deadlines, on a manual clock: every timeout fires exactly when it is
// due and not a millisecond before, whichever of the others are turned off (Infinity), with no
// real waiting. Then the protocol-switch seam, the log hook, and the pure pieces the driver
// takes from the core (HeadReader, shouldKeepAlive, effectiveRequestUrl, headContentLength).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  bytesOf,
  delay,
  expectOutput,
  ManualClock,
  type MemoryConnection,
  memoryServer,
  settle,
  textOf,
  textResponse,
  withServer,
} from "./helpers.ts";
import {
  asksToClose,
  effectiveRequestUrl,
  FastResponse,
  headContentLength,
  HeadReader,
  HttpError,
  shouldKeepAlive,
  switchProtocols,
} from "../mod.ts";
import type { Handler, LogEntry, RequestHead, ServeOptions, Timeouts } from "../mod.ts";

//#region Deadlines

type DeadlineKind =
  | "idleTimeout"
  | "headTimeout"
  | "bodyTimeout"
  | "handlerTimeout"
  | "writeTimeout";

/** Distinct budgets, so that a deadline firing for the wrong kind shows. */
const BUDGETS: Record<DeadlineKind, number> = {
  idleTimeout: 1000,
  headTimeout: 2000,
  bodyTimeout: 3000,
  handlerTimeout: 4000,
  writeTimeout: 5000,
};
const KINDS = Object.keys(BUDGETS) as DeadlineKind[];

/**
 * How each deadline is brought about: a handler, what the client does, and what the connection
 * shows once the deadline has passed.
 */
interface DeadlineScenario {
  handler: Handler;
  /** Puts the connection in the state the deadline guards; resolves once it is there. */
  begin(connection: MemoryConnection): Promise<void>;
  /** The output (a status line prefix) once the deadline fired; "" for a silent close. */
  status: string;
  /** Whether the connection is dropped (destroy) rather than ended. */
  destroyed: boolean;
}

const never = new Promise<Response>(() => {});

const SCENARIOS: Record<DeadlineKind, DeadlineScenario> = {
  idleTimeout: {
    handler: () => textResponse("ok"),
    begin: () => Promise.resolve(),
    status: "",
    destroyed: false,
  },
  headTimeout: {
    handler: () => textResponse("ok"),
    begin: (connection) => Promise.resolve(connection.send("GET / HTTP/1.1\r\nHo")),
    status: "HTTP/1.1 408 ",
    destroyed: false,
  },
  bodyTimeout: {
    handler: async (request) => textResponse(await request.text()),
    begin: async (connection) => {
      connection.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234");
      await delay(5); // the handler asks for the rest of the body
    },
    status: "HTTP/1.1 408 ",
    destroyed: false,
  },
  handlerTimeout: {
    handler: () => never,
    begin: (connection) => Promise.resolve(connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")),
    status: "HTTP/1.1 503 ",
    destroyed: false,
  },
  writeTimeout: {
    // One chunk at once, then a body that never ends: the driver streams, and waits for a drain
    // that a client that does not read never gives.
    handler: () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start: (controller) => controller.enqueue(bytesOf("first")),
        }),
      ),
    begin: async (connection) => {
      connection.writeResult = false;
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await settle(() => connection.writes.length > 0);
      await delay(5);
    },
    status: "HTTP/1.1 200 ",
    destroyed: true,
  },
};

/** Runs one scenario: nothing happens 1 ms before the deadline; it fires at the deadline. */
async function checkDeadline(kind: DeadlineKind, timeouts: Partial<Timeouts>): Promise<void> {
  const clock = new ManualClock();
  const scenario = SCENARIOS[kind];
  const options: ServeOptions = { ...timeouts, clock };
  await withServer(memoryServer(scenario.handler, options), async ({ connect }) => {
    const connection = connect();
    await scenario.begin(connection);
    clock.advance(BUDGETS[kind] - 1);
    await delay(1);
    assert.equal(connection.ended || connection.destroyed, false, `${kind} fired early`);
    clock.advance(1);
    await settle(() => connection.ended || connection.destroyed, 1000);
    assert.equal(
      scenario.destroyed ? connection.destroyed : connection.ended,
      true,
      `${kind} did not fire`,
    );
    const output = textOf(connection.writes);
    if (scenario.status === "") assert.equal(output, "");
    else assert.ok(output.startsWith(scenario.status), output.slice(0, 60));
  });
}

describe("serve() deadlines, on a manual clock", () => {
  for (const kind of KINDS) {
    const others = KINDS.filter((other) => other !== kind);
    const only: Partial<Timeouts> = { [kind]: BUDGETS[kind] };
    const allOthersOn: Partial<Timeouts> = { ...BUDGETS };
    const allOthersOff: Partial<Timeouts> = { ...only };
    for (const other of others) allOthersOff[other] = Infinity;
    test(`${kind} fires at its time with every other deadline on`, () =>
      checkDeadline(kind, allOthersOn));
    test(`${kind} fires at its time with every other deadline off (Infinity)`, () =>
      checkDeadline(kind, allOthersOff));
    for (const other of others) {
      test(`${kind} fires at its time with ${other}: Infinity`, () =>
        checkDeadline(kind, { ...BUDGETS, [other]: Infinity }));
    }
  }

  test("the head deadline runs over the whole head, not the gap between bytes", async () => {
    const clock = new ManualClock();
    const started = memoryServer(() => textResponse("ok"), { clock, headTimeout: 2000 });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      for (const piece of ["GET / ", "HTTP/1.1\r\n", "Host: a\r\n"]) {
        connection.send(piece);
        clock.advance(600);
        await delay(1);
      }
      assert.equal(connection.ended, false);
      clock.advance(200);
      await settle(() => connection.ended, 1000);
      assert.ok(textOf(connection.writes).startsWith("HTTP/1.1 408 "));
    });
  });

  test("an idle keep-alive connection gets a fresh idle deadline after each response", async () => {
    const clock = new ManualClock();
    const started = memoryServer(() => textResponse("ok"), { clock, idleTimeout: 1000 });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      clock.advance(900);
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await settle(() => connection.writes.length > 0);
      clock.advance(900);
      await delay(1);
      assert.equal(connection.ended, false, "the first idle deadline was not cleared");
      clock.advance(100);
      await settle(() => connection.ended, 1000);
      assert.equal(connection.ended, true);
    });
  });

  test("with every timeout off a connection stays open however much time passes", async () => {
    const clock = new ManualClock();
    const off: Partial<Timeouts> = {};
    for (const kind of KINDS) off[kind] = Infinity;
    const started = memoryServer(() => textResponse("ok"), { ...off, clock });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHo");
      clock.advance(365 * 24 * 3600 * 1000);
      await delay(5);
      assert.equal(connection.ended || connection.destroyed, false);
      connection.sendEnd(); // the client gives up, so that the shutdown need not wait for it
    });
  });

  test("a refused connection's 503 carries the current Date, not the one at startup", async () => {
    const clock = new ManualClock();
    const started = memoryServer(() => never, { clock, maxConnections: 1 });
    await withServer(started, ({ connect }) => {
      connect();
      clock.advance(86_400_000); // a day later
      const refused = connect();
      const text = textOf(refused.writes);
      assert.ok(text.startsWith("HTTP/1.1 503 "), text);
      assert.match(text, new RegExp(`date: ${new Date(clock.time).toUTCString()}\r\n`));
      return Promise.resolve();
    });
  });
});

describe("serve() backpressure", () => {
  test("a client that pipelines bodies and never reads stops being read after a bounded amount", async () => {
    const handler: Handler = async (request) => textResponse(await request.text());
    await withServer(memoryServer(handler), async ({ connect }) => {
      const connection = connect();
      connection.writeResult = false; // the client reads nothing: every write says "full"
      const body = "x".repeat(32 * 1024);
      const request =
        `POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      let sent = 0;
      while (!connection.paused && sent < 100) {
        connection.send(request);
        sent++;
        await delay(1);
      }
      const responses = () => connection.output().split("HTTP/1.1 200 OK").length - 1;
      // One response went out and filled the queue; the socket is paused within the 64 KiB
      // backlog (two or three requests of 32 KiB), not after everything the client offers.
      assert.equal(connection.paused, true, `still reading after ${sent} requests`);
      assert.ok(sent <= 4, `${sent} requests read before pausing`);
      assert.equal(responses(), 1);
      // The client reads: everything held is answered, and reading resumes.
      connection.writeResult = true;
      connection.events!.onDrain();
      await settle(() => responses() === sent);
      assert.equal(responses(), sent);
      assert.equal(connection.paused, false);
    });
  });
});

describe("serve() request fields", () => {
  test('a handler sees several Cookie lines as one, joined by "; " on every runtime (RFC 6265 §5.4)', async () => {
    const handler: Handler = (request) => textResponse(request.headers.get("cookie") ?? "none");
    await withServer(memoryServer(handler), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n");
      await settle(() => connection.output().endsWith("a=1; b=2"));
      assert.ok(connection.output().endsWith("\r\n\r\na=1; b=2"), connection.output());
    });
  });
});

describe("serve() response fields", () => {
  test("a handler's Connection: close is sent and honoured: the response ends, then the connection", async () => {
    const handler: Handler = (request) =>
      new URL(request.url).pathname === "/shed"
        ? new Response("bye", {
          headers: {
            "content-type": "text/plain",
            connection: "Keep-Alive, CLOSE",
            "keep-alive": "timeout=5",
          },
        })
        : textResponse("ok");
    await withServer(memoryServer(handler), async ({ connect }) => {
      const connection = connect();
      // Pipelined: the request after /shed is never answered.
      connection.send(
        "GET /shed HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
      );
      await expectOutput(
        connection,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n" +
          "date: X\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye",
        true,
      );
      assert.equal(connection.lingered, true, "a server-decided close lingers");
    });
  });

  test("a handler's other Connection options and hop-by-hop fields are replaced, not sent", async () => {
    const handler: Handler = () =>
      new Response("hi", {
        headers: {
          "content-type": "text/plain",
          connection: "upgrade, x-private",
          "keep-alive": "timeout=5",
        },
      });
    await withServer(memoryServer(handler), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await expectOutput(
        connection,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n" +
          "date: X\r\ncontent-length: 2\r\n\r\nhi",
        false,
      );
    });
  });

  test("every body type goes out with the Content-Type its Response has, and a Content-Length", async () => {
    const form = new FormData();
    form.append("field", "value");
    form.append("upload", new File(["file body"], "a.txt", { type: "text/x-a" }));
    const bodies: Record<string, () => BodyInit> = {
      string: () => "text body",
      formData: () => form,
      urlSearchParams: () => new URLSearchParams("a=1&b=%20"),
      blob: () => new Blob(["blob body"], { type: "text/x-blob" }),
      file: () => new File(["file body"], "f.txt", { type: "text/x-file" }),
      arrayBuffer: () => new Uint8Array([1, 2, 3]).buffer,
      uint8Array: () => new Uint8Array([1, 2, 3]),
      dataView: () => new DataView(new Uint8Array([1, 2, 3, 4]).buffer, 1, 2),
    };
    for (const [name, body] of Object.entries(bodies)) {
      // What the runtime's own Response says, read as a client would: the reference.
      const reference = new Response(body());
      const type = reference.headers.get("content-type");
      const bytes = new Uint8Array(await reference.arrayBuffer());
      await withServer(memoryServer(() => new Response(body())), async ({ connect }) => {
        const connection = connect();
        connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        await settle(() => connection.output().length >= bytes.length + 20);
        await delay(5);
        const output = connection.output();
        const headEnd = output.indexOf("\r\n\r\n");
        const head = output.slice(0, headEnd);
        const fields = new Map(
          head.split("\r\n").slice(1).map((line) => line.split(": ") as [string, string]),
        );
        // A FormData's boundary is new for each Response: compare what comes before it.
        const boundless = (value: string | null | undefined) =>
          value?.replace(/boundary=.*$/, "boundary=") ?? null;
        assert.equal(boundless(fields.get("content-type")), boundless(type), `${name}: ${head}`);
        assert.equal(fields.get("content-length"), String(bytes.length), `${name}: ${head}`);
        assert.equal(fields.has("transfer-encoding"), false, `${name}: ${head}`);
        if (name !== "formData") {
          assert.equal(output.slice(headEnd + 4), textOf(bytes), name);
        }
      });
    }
    // On Bun, a string body's Response has no Content-Type (see the README); FastResponse's has.
    await withServer(memoryServer(() => new FastResponse("text body")), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await settle(() => connection.output().endsWith("text body"));
      assert.match(connection.output(), /\r\ncontent-type: text\/plain;charset=UTF-8\r\n/);
    });
  });

  test("a FormData response reaches fetch() whole: formData() parses it on every runtime", async () => {
    const form = new FormData();
    form.append("field", "value");
    form.append("upload", new File(["file body"], "a.txt", { type: "text/x-a" }));
    await withServer(memoryServer(() => new Response(form)), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await settle(() => connection.output().includes("--\r\n"));
      await delay(5);
      const output = connection.output();
      const headEnd = output.indexOf("\r\n\r\n");
      const type = /\r\ncontent-type: ([^\r]+)/.exec(output.slice(0, headEnd + 2))?.[1];
      assert.ok(type, output.slice(0, headEnd));
      const parsed = await new Response(bytesOf(output.slice(headEnd + 4)).slice(), {
        headers: { "content-type": type },
      }).formData();
      assert.equal(parsed.get("field"), "value");
      const upload = parsed.get("upload") as File;
      assert.equal(await upload.text(), "file body");
      assert.equal(upload.name, "a.txt");
    });
  });

  test("asksToClose finds close among the Connection options, any case, OWS only", () => {
    const asks = (value: string) => asksToClose(new Headers({ connection: value }));
    assert.equal(asks("close"), true);
    assert.equal(asks("keep-alive,\tClose "), true);
    assert.equal(asks("keep-alive"), false);
    assert.equal(asks("closed"), false);
    assert.equal(asks("close\xA0"), false);
    assert.equal(asksToClose(new Headers()), false);
  });
});

//#endregion
//#region The protocol switch

/** A protocol for the tests: echoes what it gets, and records what happened to it. */
function echoProtocol(record: string[]) {
  return switchProtocols(
    ({ transport, buffered, request }) => {
      record.push(`start ${new URL(request.url).pathname} buffered=${textOf(buffered)}`);
      return {
        onData(chunk) {
          record.push(`data ${textOf(chunk)}`);
          transport.write(chunk);
        },
        onEnd: () => record.push("end"),
        onDrain() {},
        onClose: () => record.push("close"),
        close() {
          record.push("asked to close");
          transport.end(false);
        },
      };
    },
    { upgrade: "echo" },
  );
}

describe("serve() protocol switch (switchProtocols)", () => {
  test("after the 101 the connection and the bytes past the head go to the new protocol", async () => {
    const record: string[] = [];
    const clock = new ManualClock();
    await withServer(memoryServer(() => echoProtocol(record), { clock }), async ({ connect }) => {
      const connection = connect();
      connection.send(
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nhello",
      );
      await settle(() => record.length > 0);
      const head = connection.output();
      assert.ok(head.startsWith("HTTP/1.1 101 Switching Protocols\r\n"), head);
      assert.match(head, /\r\nupgrade: echo\r\n/);
      assert.match(head, /\r\nconnection: upgrade\r\n\r\n$/);
      assert.doesNotMatch(head, /content-length|transfer-encoding/);
      assert.deepEqual(record, ["start /chat buffered=hello"]);
      // Not HTTP any more: a request line is just data, and no HTTP deadline applies.
      connection.send("GET / HTTP/1.1\r\n\r\n");
      clock.advance(10 * 60_000);
      await delay(2);
      assert.equal(connection.ended || connection.destroyed, false);
      assert.ok(connection.output().endsWith("\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
      connection.sendEnd();
      assert.deepEqual(record.slice(1), ["data GET / HTTP/1.1\r\n\r\n", "end"]);
    });
    assert.equal(record.at(-1), "close", "shutdown asks the protocol to close, then it closes");
    assert.ok(record.includes("asked to close"));
  });

  test("a 101 without switchProtocols is answered 500 and logged", async () => {
    const logged: LogEntry[] = [];
    // The way Deno lets a handler make one; the same 101 on every runtime.
    const SwitchingResponse = class extends Response {
      override get status(): number {
        return 101;
      }
    };
    const handler = () => new SwitchingResponse(null, { headers: { upgrade: "echo" } });
    const started = memoryServer(handler, { onLog: (entry) => logged.push(entry) });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n");
      await settle(() => connection.writes.length > 0);
      assert.ok(connection.output().startsWith("HTTP/1.1 500 "), connection.output());
      assert.equal(logged.length, 1);
      assert.equal(logged[0].message, "wireserve: handler failed");
      assert.ok(logged[0].error instanceof TypeError);
    });
  });

  test("an HTTP/1.0 request is never switched (RFC 9110 §7.8)", async () => {
    const record: string[] = [];
    const started = memoryServer(() => echoProtocol(record), { onLog: () => {} });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.0\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n");
      await settle(() => connection.writes.length > 0);
      assert.ok(connection.output().startsWith("HTTP/1.1 500 "), connection.output());
      assert.deepEqual(record, []);
    });
  });

  test("switchProtocols makes a 101 on every runtime", () => {
    const response = switchProtocols(
      () => ({ onData() {}, onEnd() {}, onDrain() {}, onClose() {} }),
      {
        upgrade: "echo",
      },
    );
    assert.ok(response instanceof Response);
    assert.equal(response.status, 101);
    assert.equal(response.statusText, "Switching Protocols");
    assert.equal(response.headers.get("upgrade"), "echo");
  });
});

//#endregion
//#region Logging

describe("serve() onLog", () => {
  test("onLog receives a handler failure instead of the console", async () => {
    const logged: LogEntry[] = [];
    const failure = new Error("boom");
    const started = memoryServer(() => {
      throw failure;
    }, { onLog: (entry) => logged.push(entry) });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await settle(() => connection.writes.length > 0);
      assert.ok(connection.output().startsWith("HTTP/1.1 500 "));
      assert.deepEqual(logged, [{
        level: "error",
        message: "wireserve: handler failed",
        error: failure,
      }]);
    });
  });

  test("onLog receives a handler timeout as a warning", async () => {
    const logged: LogEntry[] = [];
    const clock = new ManualClock();
    const started = memoryServer(() => never, {
      clock,
      handlerTimeout: 100,
      onLog: (entry) => logged.push(entry),
    });
    await withServer(started, async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await delay(1);
      clock.advance(100);
      await settle(() => connection.ended);
      assert.deepEqual(logged, [{ level: "warn", message: "wireserve: handler timed out" }]);
    });
  });
});

//#endregion
//#region Core pieces the driver uses

/** Feeds `text` to a HeadReader in pieces of `step` bytes, as a connection's buffer grows. */
function readInPieces(text: string, step: number): { head: RequestHead | null; consumed: number } {
  const bytes = bytesOf(text);
  const reader = new HeadReader();
  let start = 0;
  for (let end = Math.min(step, bytes.length);; end = Math.min(end + step, bytes.length)) {
    const head = reader.read(bytes, start, end);
    start += reader.consumed;
    if (head !== null || end === bytes.length) return { head, consumed: start };
  }
}

describe("HeadReader", () => {
  const request = "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

  test("HeadReader reads the same head whole, in pieces and byte by byte", () => {
    const whole = readInPieces(request, request.length);
    assert.equal(whole.head?.target, "/a?b");
    assert.equal(whole.consumed, request.length);
    for (const step of [1, 2, 3, 7, 16]) {
      const pieces = readInPieces(request, step);
      assert.deepEqual(pieces.head, whole.head, `step ${step}`);
      assert.equal(pieces.consumed, request.length, `step ${step}`);
    }
  });

  test("HeadReader skips up to two empty lines before a request line (RFC 9112 §2.2)", () => {
    assert.equal(readInPieces(`\r\n\r\n${request}`, 1).head?.target, "/a?b");
    assert.throws(
      () => readInPieces(`\r\n\r\n\r\n${request}`, 1),
      (error) => error instanceof HttpError && error.code === "INVALID_REQUEST_LINE",
    );
  });

  test("HeadReader leaves what follows the head unread", () => {
    const bytes = bytesOf(`${request}POST / HTTP/1.1\r\n`);
    const reader = new HeadReader();
    assert.ok(reader.read(bytes, 0, bytes.length) !== null);
    assert.equal(reader.consumed, request.length);
    assert.equal(reader.read(bytes, request.length, bytes.length), null);
  });

  test("HeadReader rejects an over-long target before the head is complete (414)", () => {
    const reader = new HeadReader({ maxTargetBytes: 16 });
    const bytes = bytesOf(`GET /${"a".repeat(40)}`);
    assert.throws(
      () => reader.read(bytes, 0, bytes.length),
      (error) => error instanceof HttpError && error.status === 414,
    );
  });

  test("HeadReader rejects a head over maxHeadBytes without its end (431)", () => {
    const reader = new HeadReader({ maxHeadBytes: 64 });
    const bytes = bytesOf(`GET / HTTP/1.1\r\nX: ${"a".repeat(80)}`);
    assert.throws(
      () => reader.read(bytes, 0, bytes.length),
      (error) => error instanceof HttpError && error.status === 431,
    );
  });

  test("HeadReader.isHeadRequest looks at the method of a head not yet complete", () => {
    const bytes = bytesOf("HEAD /x HTTP/1.1\r\nHo");
    assert.equal(HeadReader.isHeadRequest(bytes, 0, bytes.length), true);
    assert.equal(HeadReader.isHeadRequest(bytes, 1, bytes.length), false);
  });
});

describe("shouldKeepAlive", () => {
  const base = {
    clientKeepAlive: true,
    serverClose: false,
    clientGone: false,
    unreadBodyBytes: 0,
    maxDiscardBytes: 100,
  };
  const cases: Array<[string, Partial<typeof base>, boolean]> = [
    ["keeps a connection both sides want", {}, true],
    ["closes when the client asks (RFC 9112 §9.6)", { clientKeepAlive: false }, false],
    ["closes when the server decides", { serverClose: true }, false],
    ["closes when the client has gone", { clientGone: true }, false],
    ["keeps it to read and drop a short unread body", { unreadBodyBytes: 100 }, true],
    ["closes rather than read a long unread body", { unreadBodyBytes: 101 }, false],
    ["closes for a body of unknown length", { unreadBodyBytes: Infinity }, false],
  ];
  for (const [name, change, expected] of cases) {
    test(`shouldKeepAlive ${name}`, () => {
      assert.equal(shouldKeepAlive({ ...base, ...change }), expected);
    });
  }
});

describe("effectiveRequestUrl and headContentLength", () => {
  test("effectiveRequestUrl builds origin-form from the scheme and Host (RFC 9112 §3.3)", () => {
    assert.equal(
      effectiveRequestUrl({ target: "/a?b", host: "example.com:81" }, false, "127.0.0.1:80"),
      "http://example.com:81/a?b",
    );
    assert.equal(
      effectiveRequestUrl({ target: "/", host: "example.com" }, true, "127.0.0.1:443"),
      "https://example.com/",
    );
  });

  test("effectiveRequestUrl uses the local address for an HTTP/1.0 request without Host", () => {
    assert.equal(
      effectiveRequestUrl({ target: "/x", host: "" }, false, "[::1]:8080"),
      "http://[::1]:8080/x",
    );
  });

  test("effectiveRequestUrl takes an absolute-form target's own authority (RFC 9112 §3.2.2)", () => {
    assert.equal(
      effectiveRequestUrl({ target: "http://other/x", host: "example.com" }, false, "h:1"),
      "http://other/x",
    );
  });

  test("headContentLength advertises the GET length for HEAD (RFC 9110 §9.3.2)", () => {
    assert.equal(headContentLength(13, null), 13);
    assert.equal(headContentLength(null, null), undefined);
    assert.equal(headContentLength(undefined, "1234"), 1234);
    assert.equal(headContentLength(undefined, "x"), undefined);
    assert.equal(headContentLength(undefined, null), undefined);
  });
});

//#endregion
