/**
 * Feeding machinery for layer 1: runs each case of `test/core_cases.ts` through every way a
 * connection driver could present the bytes, and requires the same result from each.
 *
 * - whole: the input in one buffer, `(buf, 0, length)`;
 * - split at every index: a prefix first, then the whole input (for the stateless head parser:
 *   every prefix on its own), as a driver does when a read ends anywhere;
 * - byte by byte: one more byte per call, in a receive buffer whose spare capacity holds poison;
 * - poisoned: the input at an offset inside a larger buffer whose bytes before `start` and after
 *   `end` are poison (NUL, `X`, CRLFCRLF, bare LF, CR, a last chunk), so reading outside
 *   `[start, end)` changes the result.
 *
 * A prefix may only give "need more bytes", the same error code as the whole input (an early
 * rejection), or the whole input's result once the prefix holds all of it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ChunkedDecoder, findHeadEnd, HttpError, parseRequestHead } from "../mod.ts";
import type { Framing, Limits, RequestHead } from "../mod.ts";
import { EXPECTED_STATUS } from "./core_cases.ts";
import type { ChunkedCase, ExpectedCode, FindHeadEndCase, HeadCase } from "./core_cases.ts";
import { bytesOf as latin1, textOf as fromLatin1 } from "./helpers.ts";

//#region Bytes

// The byte helpers are test/helpers.ts's, under the names the core tables use.
export { fromLatin1, latin1 };

const CRLFCRLF = latin1("\r\n\r\n");

/** Byte patterns written around an input so that any read outside `[start, end)` shows. */
export const POISONS: ReadonlyArray<{ readonly name: string; readonly bytes: Uint8Array }> = [
  { name: "NUL", bytes: latin1("\x00") },
  { name: "X", bytes: latin1("X") },
  { name: "CRLFCRLF", bytes: CRLFCRLF },
  { name: "bare LF", bytes: latin1("\n") },
  { name: "CR", bytes: latin1("\r") },
  { name: "last chunk", bytes: latin1("0\r\n\r\n") },
];

const POISON_BEFORE = 7;
const POISON_AFTER = 16;

/** Copies `bytes` into a new buffer between poison: the pattern ends right before `start` and
 *  starts again right at `end`. */
export function embed(
  bytes: Uint8Array,
  poison: Uint8Array,
): { buf: Uint8Array; start: number; end: number } {
  const start = POISON_BEFORE;
  const end = start + bytes.length;
  const buf = new Uint8Array(end + POISON_AFTER);
  for (let i = 0; i < start; i++) {
    buf[i] = poison[(((i - start) % poison.length) + poison.length) % poison.length];
  }
  buf.set(bytes, start);
  for (let i = end; i < buf.length; i++) buf[i] = poison[(i - end) % poison.length];
  return { buf, start, end };
}

/** The prefix lengths to try: all of them for short inputs; for long ones the first and last 64
 *  and every 97th, so that a stateless parser is not run a quadratic number of times. */
export function splitPoints(length: number): number[] {
  if (length <= 2048) return Array.from({ length: length + 1 }, (_, i) => i);
  const points = new Set<number>();
  for (let i = 0; i <= 64; i++) points.add(i);
  for (let i = length - 64; i <= length; i++) points.add(i);
  for (let i = 0; i <= length; i += 97) points.add(i);
  return [...points].sort((a, b) => a - b);
}

//#endregion

//#region Outcomes

/** What a call did, as plain data that `assert.deepEqual` can compare and print. */
export type Outcome =
  | { readonly kind: "value"; readonly value: unknown }
  | { readonly kind: "error"; readonly code: string; readonly status: number }
  | { readonly kind: "unexpected"; readonly error: string };

/** Runs `fn` and records its value, its `HttpError` (code and status), or any other exception. */
export function capture(fn: () => unknown): Outcome {
  try {
    return { kind: "value", value: fn() };
  } catch (error) {
    if (error instanceof HttpError) {
      return { kind: "error", code: error.code, status: error.status };
    }
    return {
      kind: "unexpected",
      error: error instanceof Error ? (error.stack ?? String(error)) : String(error),
    };
  }
}

/** The outcome an error case expects: the code with the status the contract gives it. */
export function errorOutcome(code: ExpectedCode): Outcome {
  return { kind: "error", code, status: EXPECTED_STATUS[code] };
}

/** A predicate for `assert.throws`: an `HttpError` with this code and the contract's status. */
export function isHttpError(code: ExpectedCode): (error: unknown) => boolean {
  return (error) =>
    error instanceof HttpError && error.code === code && error.status === EXPECTED_STATUS[code];
}

function normalizeFraming(framing: Framing): Framing {
  return framing.kind === "length"
    ? { kind: "length", length: framing.length }
    : { kind: framing.kind };
}

/** Copies the contract's fields of a parsed head into a plain object (drops anything extra). */
function normalizeHead(head: RequestHead | null): unknown {
  if (head === null) return null;
  return {
    method: head.method,
    target: head.target,
    version: head.version,
    headers: head.headers.map(([name, value]) => [name, value]),
    framing: normalizeFraming(head.framing),
    keepAlive: head.keepAlive,
    expectContinue: head.expectContinue,
    host: head.host,
    size: head.size,
  };
}

function printable(text: string): string {
  return JSON.stringify(text.length > 80 ? text.slice(0, 80) + "..." : text);
}

//#endregion

//#region Stateless functions (findHeadEnd, parseRequestHead)

/**
 * Checks a stateless function of `(buf, start, end)` against one expected outcome under every
 * feeding strategy. `run` must return results relative to `start` so that they compare across
 * offsets. `incomplete` is the "need more bytes" value; `availableAt` is the prefix length from
 * which the expected value is available (the head's size), or `Infinity` if it never is.
 */
function checkStateless(
  label: string,
  bytes: Uint8Array,
  run: (buf: Uint8Array, start: number, end: number) => unknown,
  expected: Outcome,
  incomplete: unknown,
  availableAt: number,
): void {
  const incompleteOutcome: Outcome = { kind: "value", value: incomplete };
  const points = splitPoints(bytes.length);

  /** What a prefix of `k` bytes may give: need-more, the same error, or the final value. */
  function checkPrefix(strategy: string, k: number, actual: Outcome): void {
    if (expected.kind === "error" && actual.kind === "error") {
      assert.deepEqual(
        actual,
        expected,
        `${label}, ${strategy}: prefix of ${k} bytes rejected with another code`,
      );
      return;
    }
    const allowed = expected.kind === "value" && k >= availableAt ? expected : incompleteOutcome;
    assert.deepEqual(actual, allowed, `${label}, ${strategy}: prefix of ${k} bytes`);
  }

  // (a) whole
  assert.deepEqual(capture(() => run(bytes, 0, bytes.length)), expected, `${label}, whole input`);

  // (b) split: every prefix in a buffer of its own, then the whole input
  for (const k of points) {
    const prefix = bytes.slice(0, k);
    checkPrefix("split", k, capture(() => run(prefix, 0, k)));
  }

  // (c) byte by byte into a receive buffer whose spare capacity holds poison; stop at the first
  // definite answer, which must be the whole input's and come no later than it can.
  const buffer = new Uint8Array(bytes.length + POISON_AFTER);
  for (let i = 0; i < buffer.length; i++) buffer[i] = CRLFCRLF[i % 4];
  const pointSet = new Set(points);
  let settled: Outcome = incompleteOutcome;
  let settledAt = -1;
  for (let k = 0; k <= bytes.length; k++) {
    if (k > 0) buffer[k - 1] = bytes[k - 1];
    if (!pointSet.has(k)) continue;
    const actual = capture(() => run(buffer, 0, k));
    checkPrefix("byte by byte", k, actual);
    if (actual.kind !== "value" || actual.value !== incomplete) {
      settled = actual;
      settledAt = k;
      break;
    }
  }
  assert.deepEqual(
    settled,
    expected,
    `${label}, byte by byte: final result (settled at ${settledAt})`,
  );
  if (expected.kind === "value" && availableAt <= bytes.length) {
    assert.equal(
      settledAt,
      availableAt,
      `${label}, byte by byte: result available at the head's end`,
    );
  }

  // (d) poisoned: the input at an offset between poison bytes, whole and every prefix
  for (const poison of POISONS) {
    const { buf, start, end } = embed(bytes, poison.bytes);
    assert.deepEqual(
      capture(() => run(buf, start, end)),
      expected,
      `${label}, whole input inside ${poison.name} poison`,
    );
    for (const k of points) {
      const inner = embed(bytes.subarray(0, k), poison.bytes);
      checkPrefix(
        `inside ${poison.name} poison`,
        k,
        capture(() => run(inner.buf, inner.start, inner.end)),
      );
    }
  }
}

/** Runs a `findHeadEnd` case through every strategy, plus resuming with `from`. */
export function checkFindHeadEndCase(c: FindHeadEndCase): void {
  const bytes = latin1(c.raw);
  const run = (buf: Uint8Array, start: number, end: number) => {
    const index = findHeadEnd(buf, start, end);
    return index < 0 ? index : index - start;
  };
  if (typeof c.expect === "string") {
    assert.throws(() => findHeadEnd(bytes, 0, bytes.length), isHttpError(c.expect));
  }
  const expected = typeof c.expect === "string"
    ? errorOutcome(c.expect)
    : { kind: "value" as const, value: c.expect };
  const availableAt = typeof c.expect === "number" && c.expect >= 0 ? c.expect : Infinity;
  checkStateless(printable(c.raw), bytes, run, expected, -1, availableAt);
  checkFindHeadEndResume(c, bytes, expected);
}

/** Feeds increasing ends to `findHeadEnd`, resuming at `previousEnd - 3` (clamped to `start`) as
 *  the contract says a caller should, inside poison; the first answer must be the single scan's. */
function checkFindHeadEndResume(c: FindHeadEndCase, bytes: Uint8Array, expected: Outcome): void {
  for (const poison of POISONS) {
    const { buf, start } = embed(bytes, poison.bytes);
    for (const step of [1, 2, 3, 5]) {
      let previousEnd = start;
      let settled: Outcome = { kind: "value", value: -1 };
      for (
        let end = start;
        end <= start + bytes.length;
        end = Math.min(end + step, start + bytes.length)
      ) {
        const from = Math.max(start, previousEnd - 3);
        const actual = capture(() => {
          const index = findHeadEnd(buf, start, end, from);
          return index < 0 ? index : index - start;
        });
        previousEnd = end;
        if (actual.kind !== "value" || actual.value !== -1) {
          settled = actual;
          break;
        }
        if (end === start + bytes.length) break;
      }
      assert.deepEqual(
        settled,
        expected,
        `${printable(c.raw)}, resumed in steps of ${step} inside ${poison.name} poison`,
      );
    }
  }
}

/** Runs a `parseRequestHead` case through every strategy. */
export function checkHeadCase(c: HeadCase): void {
  const bytes = latin1(c.raw);
  const limits = c.limits;
  const run = (buf: Uint8Array, start: number, end: number) => {
    const head = normalizeHead(parseRequestHead(buf, start, end, limits)) as
      | { size: number }
      | null;
    return head;
  };
  let expected: Outcome;
  let availableAt = Infinity;
  if (c.expect === null) {
    expected = { kind: "value", value: null };
  } else if (typeof c.expect === "string") {
    assert.throws(() => parseRequestHead(bytes, 0, bytes.length, limits), isHttpError(c.expect));
    expected = errorOutcome(c.expect);
  } else {
    const headEnd = c.raw.indexOf("\r\n\r\n") + 4;
    const size = c.expect.size ?? headEnd;
    assert.equal(
      size,
      headEnd,
      `case table: size ${size} of "${c.name}" is not the head's end ${headEnd}`,
    );
    expected = {
      kind: "value",
      value: { ...c.expect, size, framing: normalizeFraming(c.expect.framing) },
    };
    availableAt = size;
  }
  checkStateless(c.name, bytes, run, expected, null, availableAt);
}

//#endregion

//#region ChunkedDecoder

/** Where each call's bytes come from: the original buffer, or a fresh poisoned copy each call. */
type Presenter = (
  bytes: Uint8Array,
  from: number,
  to: number,
) => { buf: Uint8Array; start: number; end: number };

const PRESENT_IN_PLACE: Presenter = (bytes, from, to) => ({ buf: bytes, start: from, end: to });

function presentInPoison(poison: Uint8Array): Presenter {
  return (bytes, from, to) => embed(bytes.subarray(from, to), poison);
}

/**
 * Feeds `bytes` to a new decoder: at each boundary it presents every byte not yet consumed up to
 * that boundary (re-presenting what the decoder left), as a driver does with its receive buffer.
 * Stops when the decoder is done. Returns the body, trailers, done flag and total consumed.
 */
function feedChunked(
  bytes: Uint8Array,
  limits: Partial<Limits> | undefined,
  boundaries: Iterable<number>,
  present: Presenter,
) {
  const decoder = new ChunkedDecoder(limits);
  const out: Uint8Array[] = [];
  let consumed = 0;
  for (const boundary of boundaries) {
    if (decoder.done) break;
    if (boundary <= consumed) continue;
    const { buf, start, end } = present(bytes, consumed, boundary);
    const count = decoder.decode(buf, start, end, out);
    if (!Number.isInteger(count) || count < 0 || count > end - start) {
      throw new Error(`decode returned ${count} for ${end - start} bytes presented`);
    }
    consumed += count;
  }
  let total = 0;
  for (const view of out) total += view.length;
  const body = new Uint8Array(total);
  let offset = 0;
  for (const view of out) {
    body.set(view, offset);
    offset += view.length;
  }
  return {
    body: fromLatin1(body),
    trailers: decoder.trailers.map(([name, value]) => [name, value]),
    done: decoder.done,
    consumed,
  };
}

/** Runs a `ChunkedDecoder` case whole, split at every index, byte by byte, and inside poison. */
export function checkChunkedCase(c: ChunkedCase): void {
  const bytes = latin1(c.raw);
  const n = bytes.length;
  if (typeof c.expect === "string") {
    const code = c.expect;
    assert.throws(() => new ChunkedDecoder(c.limits).decode(bytes, 0, n, []), isHttpError(code));
  }

  const check = (strategy: string, actual: Outcome) => {
    if (c.expect === null) {
      assert.equal(
        actual.kind,
        "value",
        `${strategy}: incomplete input must not throw: ${JSON.stringify(actual)}`,
      );
      const value = (actual as { value: { done: boolean; consumed: number } }).value;
      assert.equal(value.done, false, `${strategy}: incomplete input must not be done`);
      return;
    }
    if (typeof c.expect === "string") {
      assert.deepEqual(actual, errorOutcome(c.expect), strategy);
      return;
    }
    const rest = c.expect.rest ?? "";
    assert.deepEqual(actual, {
      kind: "value",
      value: {
        body: c.expect.body,
        trailers: (c.expect.trailers ?? []).map(([name, value]) => [name, value]),
        done: true,
        consumed: n - rest.length,
      },
    }, strategy);
  };

  const points = splitPoints(n).filter((k) => k > 0 && k < n);
  const presenters: Array<[string, Presenter]> = [
    ["", PRESENT_IN_PLACE],
    ...POISONS.map((
      poison,
    ): [string, Presenter] => [` inside ${poison.name} poison`, presentInPoison(poison.bytes)]),
  ];
  for (const [where, present] of presenters) {
    check(`whole${where}`, capture(() => feedChunked(bytes, c.limits, [n], present)));
    for (const k of points) {
      check(`split at ${k}${where}`, capture(() => feedChunked(bytes, c.limits, [k, n], present)));
    }
    const everyByte = Array.from({ length: n }, (_, i) => i + 1);
    check(`byte by byte${where}`, capture(() => feedChunked(bytes, c.limits, everyByte, present)));
  }
}

//#endregion
