/**
 * The transport contract (the "Transport contract" region of mod.ts), checked against every
 * built-in adapter this runtime runs, over real sockets on 127.0.0.1: no event is delivered from
 * inside a call the driver makes (`write`, `pause`, `resume`, `end`, `destroy`), whether that call
 * is made from outside any event or from inside an event handler; `onClose` comes exactly once,
 * last; bytes written before `end` arrive before the close.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { transports } from "../mod.ts";
import type { ConnectionEvents, NetAddr, TransportConnection, TransportName } from "../mod.ts";
import { transportsHere, waitUntil } from "./helpers.ts";

/** One accepted connection, with every event it delivered and every rule it broke. */
class Probe {
  readonly events: string[] = [];
  readonly violations: string[] = [];
  connection: TransportConnection | null = null;
  /** Called for each chunk after it is recorded: a test may call the transport from here. */
  onData: (chunk: Uint8Array) => void = () => {};
  onEnd: () => void = () => {};
  #inside: string | null = null;

  /** The events to hand the adapter. */
  readonly handlers: ConnectionEvents = {
    onData: (chunk) => {
      this.#record(`data ${chunk.length}`);
      this.onData(chunk);
    },
    onEnd: () => {
      this.#record("end");
      this.onEnd();
    },
    onDrain: () => this.#record("drain"),
    onClose: () => this.#record("close"),
  };

  /** Calls the transport's `method` as the driver would, watching for events delivered inside. */
  call(name: string, method: (connection: TransportConnection) => unknown): void {
    const outer = this.#inside;
    this.#inside = name;
    try {
      method(this.connection as TransportConnection);
    } finally {
      this.#inside = outer;
    }
  }

  get closes(): number {
    return this.events.filter((event) => event === "close").length;
  }

  #record(event: string): void {
    if (this.#inside !== null) this.violations.push(`${event} delivered inside ${this.#inside}()`);
    if (this.events.includes("close")) this.violations.push(`${event} delivered after close`);
    this.events.push(event);
  }
}

/**
 * Listens with the built-in adapter `name`, connects a client, runs `body` with the accepted
 * connection's probe and the client socket, then expects the contract kept: `onClose` once, last,
 * and no event inside a call.
 */
async function withAdapter(
  name: TransportName,
  body: (probe: Probe, client: net.Socket, received: () => Buffer) => Promise<void>,
): Promise<void> {
  const probe = new Probe();
  const listener = await transports[name](
    { hostname: "127.0.0.1", port: 0 },
    (connection) => {
      probe.connection = connection;
      return probe.handlers;
    },
  );
  const chunks: Buffer[] = [];
  const client = net.connect((listener.addr as NetAddr).port, "127.0.0.1");
  client.on("data", (chunk: Buffer) => chunks.push(chunk));
  client.on("error", () => {});
  let clientClosed = false;
  client.on("close", () => clientClosed = true);
  try {
    await waitUntil(() => probe.connection !== null, "the adapter to accept the connection");
    await body(probe, client, () => Buffer.concat(chunks));
    await waitUntil(() => probe.closes > 0, `onClose (events: ${probe.events.join(", ")})`);
    await waitUntil(() => clientClosed, "the client socket to close");
    // A little longer, for an event that would wrongly follow the close.
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(probe.violations, [], probe.events.join(", "));
    assert.equal(probe.closes, 1, probe.events.join(", "));
    assert.equal(probe.events.at(-1), "close");
  } finally {
    client.destroy();
    listener.close();
  }
}

for (const name of transportsHere()) {
  describe(`the transport contract: the ${name} adapter`, () => {
    test("write then end(false): the bytes arrive, then the close; no event inside either call", async () => {
      await withAdapter(name, async (probe, _client, received) => {
        probe.call("write", (c) => c.write(new TextEncoder().encode("hello")));
        probe.call("end", (c) => c.end(false));
        await waitUntil(() => probe.closes > 0, "onClose after end(false)");
        // The client reads in its own turns, after the server's close: wait for its bytes.
        await waitUntil(() => received().length >= 5, "the client to receive the bytes");
        assert.equal(received().toString(), "hello");
      });
    });

    test("destroy(): onClose follows from a later turn, once", async () => {
      await withAdapter(name, async (probe) => {
        probe.call("destroy", (c) => c.destroy());
        assert.equal(probe.closes, 0, "not from inside destroy()");
        await waitUntil(() => probe.closes > 0, "onClose after destroy()");
        probe.call("destroy", (c) => c.destroy()); // twice is harmless
      });
    });

    test("destroy() from inside onData: no close delivered inside it, nothing after it", async () => {
      await withAdapter(name, async (probe, client) => {
        probe.onData = () => probe.call("destroy", (c) => c.destroy());
        client.write("GET / HTTP/1.1\r\n\r\n");
        await waitUntil(() => probe.closes > 0, "onClose after destroy() in onData");
        client.write("more bytes, to a closed connection");
      });
    });

    test("end(false) from inside onEnd (the peer half-closed): the close comes from a later turn", async () => {
      await withAdapter(name, async (probe, client, received) => {
        probe.onEnd = () => {
          probe.call("write", (c) => c.write(new TextEncoder().encode("bye")));
          probe.call("end", (c) => c.end(false));
        };
        client.end();
        await waitUntil(() => probe.events.includes("end"), "onEnd after the client's FIN");
        await waitUntil(() => probe.closes > 0, "onClose after end(false) in onEnd");
        await waitUntil(() => received().length >= 3, "the client to receive the bytes");
        assert.equal(received().toString(), "bye");
      });
    });

    test("pause() and resume(): no data inside either, and data held while paused arrives after", async () => {
      await withAdapter(name, async (probe, client) => {
        probe.call("pause", (c) => c.pause());
        client.write("while paused");
        await new Promise((resolve) => setTimeout(resolve, 30));
        // A read already under way may still land; what matters is that resume delivers the rest.
        probe.call("resume", (c) => c.resume());
        await waitUntil(
          () => probe.events.some((event) => event.startsWith("data")),
          "the data after resume()",
        );
        probe.call("end", (c) => c.end(true));
        client.end();
      });
    });
  });
}
