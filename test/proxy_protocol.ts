/**
 * Tests of the PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2):
 *
 * 1. `parseProxyHeader` as a pure function, table-driven: every valid header fed whole (with the
 *    client's own bytes behind it) and as every one of its prefixes, which must return null and
 *    never throw; every invalid one must throw a `ProxyProtocolError` with the right `code`, the
 *    early ones at the first byte that cannot belong to a header. Version 2 headers are built
 *    here byte by byte, and their CRC-32C is computed here, independently of mod.ts.
 * 2. The gate in `serve({ proxyProtocol })` over the in-memory transport with a manual clock:
 *    trusted and untrusted peers, headers whole and byte by byte, malformed, cut short or late
 *    headers, LOCAL, per-client caps counted by the proxied client, shutdown, bad options.
 * 3. End to end on every transport this runtime has: raw node:net clients sending version 1 and
 *    version 2 headers, curl's `--haproxy-protocol`, and clients that send no header.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { parseProxyHeader, ProxyProtocolError } from "../mod.ts";
import type {
  Addr,
  ConnInfo,
  Handler,
  NetAddr,
  ProxyProtocolErrorCode,
  ProxyProtocolHeader,
  ProxyProtocolOptions,
  ProxyTlsInfo,
  ServeOptions,
  TransportName,
} from "../mod.ts";
import {
  bytesOf,
  delay,
  expectOutput,
  harness,
  ManualClock,
  type MemoryConnection,
  memoryServer,
  ok,
  parseResponses,
  runCommand,
  runtimeName,
  settle,
  show,
  textOf,
  textResponse,
  transportsHere,
  withTimeout,
} from "./helpers.ts";

//#region Building headers

/** The bytes a version 2 header starts with (§2.2). */
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/** Concatenates byte arrays. */
function concatBytes(...parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

/** A string's UTF-8 bytes. */
const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

/** The fields of a version 2 header to build; each defaults to a valid TCP over IPv4 header. */
interface V2Fields {
  /** The 13th byte: version (high nibble) and command (low). @default 0x21, version 2 PROXY */
  versionCommand?: number;
  /** The 14th byte: family (high nibble) and protocol (low). @default 0x11, TCP over IPv4 */
  familyProtocol?: number;
  /** The address block. @default none */
  addresses?: Uint8Array | readonly number[];
  /** TLV fields (from {@linkcode tlv}) or any bytes, after the addresses. */
  tlvs?: readonly (Uint8Array | readonly number[])[];
  /** The 15th and 16th bytes, when they should not be the true length of what follows. */
  length?: number;
}

/** A version 2 header: signature, version and command, family and protocol, length, the rest. */
function v2(fields: V2Fields = {}): Uint8Array {
  const rest = concatBytes(fields.addresses ?? [], ...(fields.tlvs ?? []));
  const length = fields.length ?? rest.length;
  return concatBytes(
    V2_SIGNATURE,
    [fields.versionCommand ?? 0x21, fields.familyProtocol ?? 0x11, length >> 8, length & 0xff],
    rest,
  );
}

/** One TLV field: type, two bytes of length, the value (a string as UTF-8). */
function tlv(type: number, value: string | Uint8Array | readonly number[]): Uint8Array {
  const bytes = typeof value === "string" ? utf8(value) : Uint8Array.from(value);
  return concatBytes([type, bytes.length >> 8, bytes.length & 0xff], bytes);
}

/** A 16-bit number in network byte order. */
const u16 = (n: number): number[] => [n >> 8, n & 0xff];

/** The address block of TCP or UDP over IPv4: two dotted addresses, then two ports. */
function inet4(source: string, sourcePort: number, destination: string, destinationPort: number) {
  const address = (text: string) => text.split(".").map(Number);
  return [...address(source), ...address(destination), ...u16(sourcePort), ...u16(destinationPort)];
}

/** The address block of TCP or UDP over IPv6: two addresses as eight 16-bit words, two ports. */
function inet6(
  source: readonly number[],
  sourcePort: number,
  destination: readonly number[],
  destinationPort: number,
): number[] {
  return [
    ...source.flatMap(u16),
    ...destination.flatMap(u16),
    ...u16(sourcePort),
    ...u16(destinationPort),
  ];
}

/** The address block of a Unix socket: two paths, each NUL-padded to 108 bytes. */
function unixAddresses(source: string, destination: string): Uint8Array {
  const block = new Uint8Array(216);
  block.set(utf8(source), 0);
  block.set(utf8(destination), 108);
  return block;
}

/**
 * CRC-32C (Castagnoli) bit by bit: reflected polynomial 0x82F63B78, initial value and final XOR
 * 0xFFFFFFFF (RFC 4960 Appendix B). Written here rather than taken from mod.ts, which uses a table.
 */
function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * A version 2 header with a CRC32c TLV last (§2.2.3): built with the checksum field zeroed, the
 * CRC-32C of the whole header then written into it, XORed with `corrupt` to make a wrong one.
 */
function v2WithChecksum(fields: V2Fields, corrupt = 0): Uint8Array {
  const bytes = v2({ ...fields, tlvs: [...(fields.tlvs ?? []), tlv(0x03, [0, 0, 0, 0])] });
  const crc = (crc32c(bytes) ^ corrupt) >>> 0;
  bytes.set([crc >>> 24, (crc >>> 16) & 0xff, (crc >>> 8) & 0xff, crc & 0xff], bytes.length - 4);
  return bytes;
}

/** The value of the last TLV of `header`, whose last TLV has a `length`-byte value. */
const lastValue = (header: Uint8Array, length: number): number[] =>
  Array.from(header.subarray(header.length - length));

//#endregion
//#region Expected results

/** A header as the tests compare it: TLV values as plain arrays, so a diff is readable. */
interface PlainHeader {
  version: 1 | 2;
  command: "PROXY" | "LOCAL";
  source: NetAddr | null;
  destination: NetAddr | null;
  tlvs: { type: number; value: number[] }[];
  alpn: string | null;
  authority: string | null;
  tls: ProxyTlsInfo | null;
  size?: number;
}

/** Copies a parsed header into a {@linkcode PlainHeader}. */
function plain(header: ProxyProtocolHeader): PlainHeader {
  return {
    version: header.version,
    command: header.command,
    source: header.source === null ? null : { ...header.source },
    destination: header.destination === null ? null : { ...header.destination },
    tlvs: header.tlvs.map(({ type, value }) => ({ type, value: Array.from(value) })),
    alpn: header.alpn,
    authority: header.authority,
    tls: header.tls === null ? null : { ...header.tls },
    size: header.size,
  };
}

/** A TCP address. */
const tcp = (hostname: string, port: number): NetAddr => ({ hostname, port, transport: "tcp" });

/** What a header that names no TLV says: the addresses, nothing else. */
function expectHeader(
  version: 1 | 2,
  command: "PROXY" | "LOCAL",
  source: NetAddr | null,
  destination: NetAddr | null,
  more: Partial<PlainHeader> = {},
): PlainHeader {
  return {
    version,
    command,
    source,
    destination,
    tlvs: [],
    alpn: null,
    authority: null,
    tls: null,
    ...more,
  };
}

/** Whether `error` is a ProxyProtocolError with `code`: the matcher for `assert.throws`. */
function isProxyError(code: ProxyProtocolErrorCode): (error: unknown) => boolean {
  return (error) => error instanceof ProxyProtocolError && error.code === code;
}

/** The code a call threw, "null" if it returned null, "header" if it returned one. */
function outcome(call: () => ProxyProtocolHeader | null): string {
  try {
    return call() === null ? "null" : "header";
  } catch (error) {
    return error instanceof ProxyProtocolError ? error.code : `${String(error)} (not a code)`;
  }
}

//#endregion
//#region 1. parseProxyHeader

/** What a client sends after the header: the bytes the parser must leave alone. */
const CLIENT_BYTES = bytesOf("GET / HTTP/1.1\r\nHost: a\r\n\r\n");

/** A header that must parse. */
interface ValidCase {
  name: string;
  /** The header (a string as latin1), without the client's bytes. */
  header: string | Uint8Array;
  expect: PlainHeader;
  maxBytes?: number;
}

/** Bytes that must be rejected. */
interface InvalidCase {
  name: string;
  bytes: string | Uint8Array;
  code: ProxyProtocolErrorCode;
  /**
   * The prefix length at which it must first throw (every shorter prefix returns null), when it
   * must be rejected before the whole is in.
   */
  at?: number;
  maxBytes?: number;
}

const FULL_V6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

const V1_VALID: ValidCase[] = [
  {
    name: "TCP4",
    header: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
    expect: expectHeader(1, "PROXY", tcp("192.0.2.1", 56324), tcp("198.51.100.2", 443)),
  },
  {
    name: "TCP4 with ports 0 and 65535 and addresses 0.0.0.0 and 255.255.255.255",
    header: "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
    expect: expectHeader(1, "PROXY", tcp("0.0.0.0", 0), tcp("255.255.255.255", 65535)),
  },
  {
    name: "TCP6 compressed",
    header: "PROXY TCP6 2001:db8::1 2001:db8::2 4444 443\r\n",
    expect: expectHeader(1, "PROXY", tcp("2001:db8::1", 4444), tcp("2001:db8::2", 443)),
  },
  {
    name: "TCP6 in full form, upper case, written back in RFC 5952's form",
    header: "PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 2001:db8:0:0:1:0:0:1 4444 443\r\n",
    expect: expectHeader(1, "PROXY", tcp("2001:db8::1", 4444), tcp("2001:db8::1:0:0:1", 443)),
  },
  {
    name: "TCP6 :: and ::1, and a single zero group left uncompressed",
    header: "PROXY TCP6 :: 2001:db8:0:1:1:1:1:1 1 2\r\n",
    expect: expectHeader(1, "PROXY", tcp("::", 1), tcp("2001:db8:0:1:1:1:1:1", 2)),
  },
  {
    name: "TCP6 with an IPv4-mapped address, reported as the IPv4 address",
    header: "PROXY TCP6 ::ffff:10.1.2.3 ::1 4444 443\r\n",
    expect: expectHeader(1, "PROXY", tcp("10.1.2.3", 4444), tcp("::1", 443)),
  },
  {
    name: "TCP6 with the longest addresses and ports",
    header: `PROXY TCP6 ${FULL_V6} ${FULL_V6} 65535 65535\r\n`,
    expect: expectHeader(1, "PROXY", tcp(FULL_V6, 65535), tcp(FULL_V6, 65535)),
  },
  {
    name: "UNKNOWN, short form",
    header: "PROXY UNKNOWN\r\n",
    expect: expectHeader(1, "PROXY", null, null),
  },
  {
    name: "UNKNOWN, long form of 107 bytes (the longest line), addresses ignored",
    header: `PROXY UNKNOWN ${FULL_V6} ${FULL_V6} 65535 65535\r\n`,
    expect: expectHeader(1, "PROXY", null, null),
  },
];

const TCP4_LINE = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";

const V1_INVALID: InvalidCase[] = [
  {
    name: "double space",
    bytes: "PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "trailing space",
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",
    code: "INVALID_HEADER",
  },
  { name: 'lowercase "proxy"', bytes: TCP4_LINE.toLowerCase(), code: "NOT_PROXY_PROTOCOL", at: 1 },
  {
    name: 'lowercase "tcp4"',
    bytes: "PROXY tcp4 192.0.2.1 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "a protocol that is not TCP4, TCP6 or UNKNOWN",
    bytes: "PROXY UDP4 192.0.2.1 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "UNKNOWN followed by more letters",
    bytes: "PROXY UNKNOWNX\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "TCP4 with IPv6 addresses",
    bytes: "PROXY TCP4 2001:db8::1 2001:db8::2 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "TCP6 with IPv4 addresses",
    bytes: "PROXY TCP6 192.0.2.1 198.51.100.2 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "mixed families: TCP4 with an IPv6 destination",
    bytes: "PROXY TCP4 192.0.2.1 2001:db8::2 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "mixed families: TCP6 with an IPv4 destination",
    bytes: "PROXY TCP6 2001:db8::1 198.51.100.2 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "port 65536",
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'leading-zero port "080"',
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 080\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'signed port "+80"',
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 +80\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'leading-zero IPv4 "01.2.3.4"',
    bytes: "PROXY TCP4 01.2.3.4 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'IPv4 octet over 255 "256.1.1.1"',
    bytes: "PROXY TCP4 256.1.1.1 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'IPv4 with three parts "1.2.3"',
    bytes: "PROXY TCP4 1.2.3 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'IPv6 with two "::"',
    bytes: "PROXY TCP6 1::2::3 ::1 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'IPv6 with ":::"',
    bytes: "PROXY TCP6 2001:db8:::1 ::1 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "IPv6 with nine groups",
    bytes: "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "IPv6 with a five-digit group",
    bytes: "PROXY TCP6 12345::1 ::1 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    // RFC 4291 §2.2: dotted IPv4 is allowed only as the last 32 bits.
    name: 'IPv6 with dotted IPv4 before the "::" "1.2.3.4::1.2.3.4"',
    bytes: "PROXY TCP6 1.2.3.4::1.2.3.4 ::1 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: 'zone id "fe80::1%eth0"',
    bytes: "PROXY TCP6 fe80::1%eth0 ::1 4444 443\r\n",
    code: "INVALID_HEADER",
  },
  {
    name: "bare LF",
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\nGET /",
    code: "INVALID_HEADER",
    at: TCP4_LINE.length - 1,
  },
  {
    name: "CR not followed by LF",
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rGET /",
    code: "INVALID_HEADER",
    at: TCP4_LINE.length,
  },
  {
    name: "no CRLF within 107 bytes",
    bytes: "PROXY UNKNOWN " + "x".repeat(120) + "\r\n",
    code: "HEADER_TOO_LARGE",
    at: 107,
  },
  {
    // The LF is the 108th byte: the CRLF is not within the first 107 (§2.1).
    name: "a line of 108 bytes, its CRLF ending one byte past the limit",
    bytes: "PROXY UNKNOWN " + "x".repeat(92) + "\r\n",
    code: "HEADER_TOO_LARGE",
    at: 107,
  },
  {
    name: "a tab (control byte) instead of a space",
    bytes: "PROXY TCP4\t192.0.2.1 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
    at: 11,
  },
  {
    name: "a NUL byte",
    bytes: "PROXY TCP4 192.0.2.1\x00 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
    at: 21,
  },
  {
    name: "a DEL byte",
    bytes: "PROXY TCP4 192.0.2.1\x7f 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
    at: 21,
  },
  {
    name: "a non-ASCII byte",
    bytes: "PROXY TCP4 192.0.2.\xb9 198.51.100.2 56324 443\r\n",
    code: "INVALID_HEADER",
    at: 20,
  },
  {
    name: "missing destination port",
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
    code: "INVALID_HEADER",
  },
  { name: "no addresses at all", bytes: "PROXY TCP4\r\n", code: "INVALID_HEADER" },
  { name: "no protocol", bytes: "PROXY \r\n", code: "INVALID_HEADER" },
  {
    name: "a field too many",
    bytes: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",
    code: "INVALID_HEADER",
  },
];

const EARLY_REJECTION: InvalidCase[] = [
  {
    name: "an HTTP request, after 1 byte",
    bytes: "GET / HTTP/1.1\r\n",
    code: "NOT_PROXY_PROTOCOL",
    at: 1,
  },
  { name: '"PROXX", after 5 bytes', bytes: "PROXX TCP4", code: "NOT_PROXY_PROTOCOL", at: 5 },
  {
    name: '"PROXY" without the space, after 6 bytes',
    bytes: "PROXYTCP4",
    code: "NOT_PROXY_PROTOCOL",
    at: 6,
  },
  {
    name: "a TLS ClientHello, after 1 byte",
    bytes: Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01),
    code: "NOT_PROXY_PROTOCOL",
    at: 1,
  },
  {
    name: "CR LF CR LF then not NUL, after 5 bytes",
    bytes: "\r\n\r\nGET / HTTP/1.1",
    code: "NOT_PROXY_PROTOCOL",
    at: 5,
  },
  {
    name: "the version 2 signature wrong in its last byte, after 12 bytes",
    bytes: Uint8Array.of(...V2_SIGNATURE.slice(0, 11), 0x0b, 0x21, 0x11, 0, 0),
    code: "NOT_PROXY_PROTOCOL",
    at: 12,
  },
];

/** An address block for the version 2 cases: 203.0.113.9:4444 → 10.0.0.1:443. */
const INET4_BLOCK = inet4("203.0.113.9", 4444, "10.0.0.1", 443);
const INET4_EXPECT = [tcp("203.0.113.9", 4444), tcp("10.0.0.1", 443)] as const;
const INET6_BLOCK = inet6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9], 4444, [
  0x2001,
  0xdb8,
  0,
  0,
  0,
  0,
  0,
  1,
], 443);

/** The TLS field (§2.2.6): client flags, verify, then the version, cipher and CN sub-TLVs. */
const TLS_VALUE = concatBytes(
  [0x07, 0, 0, 0, 0],
  tlv(0x21, "TLSv1.3"),
  tlv(0x23, "TLS_AES_128_GCM_SHA256"),
  tlv(0x22, "client.example"),
);
const TLS_UNVERIFIED_VALUE = concatBytes([0x01, 0, 0, 0, 1], tlv(0x21, "TLSv1.2"));

const CRC_INET4 = v2WithChecksum({ addresses: INET4_BLOCK });
const CRC_WITH_TLVS = v2WithChecksum({
  familyProtocol: 0x21,
  addresses: INET6_BLOCK,
  tlvs: [tlv(0x01, "h2"), tlv(0x02, "example.com")],
});
const AT_THE_LIMIT = v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x04, new Uint8Array(4065))] });

const V2_VALID: ValidCase[] = [
  {
    name: "TCP over IPv4",
    header: v2({ addresses: INET4_BLOCK }),
    expect: expectHeader(2, "PROXY", ...INET4_EXPECT),
  },
  {
    name: "TCP over IPv6",
    header: v2({ familyProtocol: 0x21, addresses: INET6_BLOCK }),
    expect: expectHeader(2, "PROXY", tcp("2001:db8::9", 4444), tcp("2001:db8::1", 443)),
  },
  {
    name: "TCP over IPv6 with an IPv4-mapped source, reported as the IPv4 address",
    header: v2({
      familyProtocol: 0x21,
      addresses: inet6(
        [0, 0, 0, 0, 0, 0xffff, 0x0a01, 0x0203],
        4444,
        [0, 0, 0, 0, 0, 0, 0, 1],
        443,
      ),
    }),
    expect: expectHeader(2, "PROXY", tcp("10.1.2.3", 4444), tcp("::1", 443)),
  },
  {
    name: "LOCAL, UNSPEC, no addresses",
    header: v2({ versionCommand: 0x20, familyProtocol: 0x00 }),
    expect: expectHeader(2, "LOCAL", null, null),
  },
  {
    name: "LOCAL with a family and garbage address bytes, length > 0 (ignored)",
    header: v2({
      versionCommand: 0x20,
      familyProtocol: 0x11,
      addresses: [0xaa, 0xbb, 0xcc, 0xdd, 0xee],
    }),
    expect: expectHeader(2, "LOCAL", null, null),
  },
  {
    name: "PROXY with the UNSPEC family and protocol (source null)",
    header: v2({ familyProtocol: 0x00 }),
    expect: expectHeader(2, "PROXY", null, null),
  },
  {
    name: "UNIX stream (falls back: source null)",
    header: v2({
      familyProtocol: 0x31,
      addresses: unixAddresses("/run/client.sock", "/run/server.sock"),
    }),
    expect: expectHeader(2, "PROXY", null, null),
  },
  {
    name: "UNIX datagram (falls back: source null)",
    header: v2({ familyProtocol: 0x32, addresses: unixAddresses("/a", "/b") }),
    expect: expectHeader(2, "PROXY", null, null),
  },
  {
    name: "UDP over IPv4 (source null)",
    header: v2({ familyProtocol: 0x12, addresses: INET4_BLOCK }),
    expect: expectHeader(2, "PROXY", null, null),
  },
  {
    name: "UDP over IPv6 (source null)",
    header: v2({ familyProtocol: 0x22, addresses: INET6_BLOCK }),
    expect: expectHeader(2, "PROXY", null, null),
  },
  {
    name: "TLVs ALPN, AUTHORITY (UTF-8), a custom 0xE0 and an empty NOOP, kept in wire order",
    header: v2({
      addresses: INET4_BLOCK,
      tlvs: [tlv(0x01, "h2"), tlv(0x02, "bücher.example"), tlv(0xe0, [1, 2, 3]), tlv(0x04, [])],
    }),
    expect: expectHeader(2, "PROXY", ...INET4_EXPECT, {
      tlvs: [
        { type: 0x01, value: [0x68, 0x32] },
        { type: 0x02, value: Array.from(utf8("bücher.example")) },
        { type: 0xe0, value: [1, 2, 3] },
        { type: 0x04, value: [] },
      ],
      alpn: "h2",
      authority: "bücher.example",
    }),
  },
  {
    name: "the SSL TLV with version, cipher and CN sub-TLVs, certificate verified",
    header: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x20, TLS_VALUE)] }),
    expect: expectHeader(2, "PROXY", ...INET4_EXPECT, {
      tlvs: [{ type: 0x20, value: Array.from(TLS_VALUE) }],
      tls: {
        secure: true,
        clientCertificate: true,
        verified: true,
        version: "TLSv1.3",
        cipher: "TLS_AES_128_GCM_SHA256",
        commonName: "client.example",
      },
    }),
  },
  {
    name: "the SSL TLV without a client certificate, verify non-zero, only a version",
    header: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x20, TLS_UNVERIFIED_VALUE)] }),
    expect: expectHeader(2, "PROXY", ...INET4_EXPECT, {
      tlvs: [{ type: 0x20, value: Array.from(TLS_UNVERIFIED_VALUE) }],
      tls: {
        secure: true,
        clientCertificate: false,
        verified: false,
        version: "TLSv1.2",
        cipher: null,
        commonName: null,
      },
    }),
  },
  {
    name: "a correct CRC32C TLV",
    header: CRC_INET4,
    expect: expectHeader(2, "PROXY", ...INET4_EXPECT, {
      tlvs: [{ type: 0x03, value: lastValue(CRC_INET4, 4) }],
    }),
  },
  {
    name: "a correct CRC32C TLV after ALPN and AUTHORITY, over IPv6",
    header: CRC_WITH_TLVS,
    expect: expectHeader(2, "PROXY", tcp("2001:db8::9", 4444), tcp("2001:db8::1", 443), {
      tlvs: [
        { type: 0x01, value: [0x68, 0x32] },
        { type: 0x02, value: Array.from(utf8("example.com")) },
        { type: 0x03, value: lastValue(CRC_WITH_TLVS, 4) },
      ],
      alpn: "h2",
      authority: "example.com",
    }),
  },
  {
    name: "exactly the default limit of 4096 bytes",
    header: AT_THE_LIMIT,
    expect: expectHeader(2, "PROXY", ...INET4_EXPECT, {
      tlvs: [{ type: 0x04, value: new Array(4065).fill(0) }],
    }),
  },
];

const V2_INVALID: InvalidCase[] = [
  {
    name: "version 1 in the 13th byte",
    bytes: v2({ versionCommand: 0x11, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
    at: 16,
  },
  {
    name: "version 3 in the 13th byte",
    bytes: v2({ versionCommand: 0x31, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
    at: 16,
  },
  {
    name: "command 2",
    bytes: v2({ versionCommand: 0x22, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
    at: 16,
  },
  {
    name: "command 15",
    bytes: v2({ versionCommand: 0x2f, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
    at: 16,
  },
  {
    name: "family 4",
    bytes: v2({ familyProtocol: 0x41, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
    at: 16,
  },
  {
    name: "protocol 3",
    bytes: v2({ familyProtocol: 0x13, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
    at: 16,
  },
  {
    name: "IPv4 with a length shorter than its 12-byte address block",
    bytes: v2({ addresses: INET4_BLOCK.slice(0, 8) }),
    code: "INVALID_HEADER",
  },
  {
    name: "IPv6 with a length shorter than its 36-byte address block",
    bytes: v2({ familyProtocol: 0x21, addresses: INET4_BLOCK }),
    code: "INVALID_HEADER",
  },
  {
    name: "UNIX with a length shorter than its 216-byte address block",
    bytes: v2({ familyProtocol: 0x31, addresses: new Uint8Array(100) }),
    code: "INVALID_HEADER",
  },
  {
    name: "a TLV running past the header",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [[0xe0, 0, 10, 1, 2, 3, 4]] }),
    code: "INVALID_HEADER",
  },
  {
    name: "a truncated TLV header (2 bytes)",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x01, "h2"), [0xe0, 0]] }),
    code: "INVALID_HEADER",
  },
  {
    name: "a sub-TLV running past the SSL TLV",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x20, [0x01, 0, 0, 0, 0, 0x21, 0, 9, 0x54])] }),
    code: "INVALID_HEADER",
  },
  {
    name: "an SSL TLV shorter than 5 bytes",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x20, [0x01, 0, 0, 0])] }),
    code: "INVALID_HEADER",
  },
  {
    name: "a wrong CRC32C",
    bytes: v2WithChecksum({ addresses: INET4_BLOCK }, 1),
    code: "CHECKSUM_MISMATCH",
  },
  {
    name: "a correct CRC32C over a header changed after it was computed",
    bytes: (() => {
      const bytes = v2WithChecksum({ addresses: INET4_BLOCK });
      bytes[16] ^= 0x01; // the source address
      return bytes;
    })(),
    code: "CHECKSUM_MISMATCH",
  },
  {
    name: "a CRC32C TLV of 3 bytes",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x03, [1, 2, 3])] }),
    code: "INVALID_HEADER",
  },
  {
    name: "a non-UTF-8 AUTHORITY",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x02, [0x61, 0xff, 0xfe])] }),
    code: "INVALID_HEADER",
  },
  {
    name: "a non-UTF-8 TLS version sub-TLV",
    bytes: v2({
      addresses: INET4_BLOCK,
      tlvs: [tlv(0x20, concatBytes([0x01, 0, 0, 0, 0], tlv(0x21, [0xc3, 0x28])))],
    }),
    code: "INVALID_HEADER",
  },
  {
    name: "a size over maxBytes 300, after the 16 fixed bytes",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x04, new Uint8Array(300))] }),
    code: "HEADER_TOO_LARGE",
    maxBytes: 300,
    at: 16,
  },
  {
    name: "one byte over the default limit of 4096, after the 16 fixed bytes",
    bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x04, new Uint8Array(4066))] }),
    code: "HEADER_TOO_LARGE",
    at: 16,
  },
  {
    name: "the largest length field, 65535, over the default limit, after the 16 fixed bytes",
    bytes: v2({ length: 0xffff }),
    code: "HEADER_TOO_LARGE",
    at: 16,
  },
];

/** Parses each valid header whole, with the client's bytes behind it, and as every prefix. */
function checkValid(c: ValidCase): void {
  const header = typeof c.header === "string" ? bytesOf(c.header) : c.header;
  const whole = concatBytes(header, CLIENT_BYTES);
  const parsed = parseProxyHeader(whole, c.maxBytes);
  assert.ok(parsed !== null, "the whole header returned null");
  assert.deepEqual(plain(parsed), { ...c.expect, size: header.length });
  assert.deepEqual(whole.subarray(parsed.size), CLIENT_BYTES, "the client's bytes");
  const alone = parseProxyHeader(header, c.maxBytes);
  assert.ok(alone !== null, "the header without the client's bytes returned null");
  assert.deepEqual(plain(alone), { ...c.expect, size: header.length });
  for (let n = 0; n < header.length; n++) {
    const result = outcome(() => parseProxyHeader(header.subarray(0, n), c.maxBytes));
    assert.equal(result, "null", `the prefix of ${n} bytes`);
  }
}

/** Rejects each invalid input whole, and at its first impossible byte when `at` says where. */
function checkInvalid(c: InvalidCase): void {
  const bytes = typeof c.bytes === "string" ? bytesOf(c.bytes) : c.bytes;
  assert.throws(() => parseProxyHeader(bytes, c.maxBytes), isProxyError(c.code));
  if (c.at === undefined) return;
  for (let n = 0; n < c.at; n++) {
    const result = outcome(() => parseProxyHeader(bytes.subarray(0, n), c.maxBytes));
    assert.equal(result, "null", `the prefix of ${n} bytes`);
  }
  const result = outcome(() => parseProxyHeader(bytes.subarray(0, c.at), c.maxBytes));
  assert.equal(result, c.code, `the prefix of ${c.at} bytes`);
}

describe("parseProxyHeader", () => {
  describe("version 1", () => {
    for (const c of V1_VALID) test(`parses ${c.name}`, () => checkValid(c));
    for (const c of V1_INVALID) test(`rejects ${c.name} with ${c.code}`, () => checkInvalid(c));
  });

  describe("version 2", () => {
    for (const c of V2_VALID) test(`parses ${c.name}`, () => checkValid(c));
    for (const c of V2_INVALID) test(`rejects ${c.name} with ${c.code}`, () => checkInvalid(c));
  });

  describe("early rejection", () => {
    for (const c of EARLY_REJECTION) test(`rejects ${c.name}`, () => checkInvalid(c));
  });

  test("the test's own CRC-32C gives the check value of RFC 3720 B.4 for 123456789", () => {
    assert.equal(crc32c(bytesOf("123456789")), 0xe3069283);
  });

  test("returns null for an empty buffer", () => {
    assert.equal(parseProxyHeader(new Uint8Array(0)), null);
  });

  test("throws a ProxyProtocolError, an Error with its name and code", () => {
    let caught: unknown = null;
    try {
      parseProxyHeader(bytesOf("GET"));
    } catch (error) {
      caught = error;
    }
    assert.ok(caught instanceof ProxyProtocolError);
    assert.ok(caught instanceof Error);
    assert.equal(caught.name, "ProxyProtocolError");
    assert.equal(caught.code, "NOT_PROXY_PROTOCOL");
  });

  test("TLV values are copies: changing the input afterwards changes nothing", () => {
    const bytes = v2({ addresses: INET4_BLOCK, tlvs: [tlv(0xe0, [1, 2, 3])] });
    const header = parseProxyHeader(bytes);
    assert.ok(header !== null);
    bytes.fill(0);
    assert.deepEqual(Array.from(header.tlvs[0].value), [1, 2, 3]);
  });
});

//#endregion
//#region 2. The gate over the in-memory transport

/** The peer every MemoryConnection has: the load balancer, as the server sees it. */
const PEER = tcp("192.0.2.7", 40000);
/** The local address every MemoryConnection has. */
const MEMORY_LOCAL = tcp("127.0.0.1", 8080);

const V1_HEADER = "PROXY TCP4 203.0.113.9 10.0.0.1 4444 443\r\n";
const REQUEST = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/** An address as text: `host:port`, or `unix:path`. */
function addressText(addr: Addr | undefined): string {
  if (addr === undefined) return "none";
  return addr.transport === "tcp" ? `${addr.hostname}:${addr.port}` : `unix:${addr.path}`;
}

/** What the handler answers: the addresses it was given. */
function describeInfo(info: ConnInfo<Addr>): string {
  return `${addressText(info.remoteAddr)} -> ${addressText(info.localAddr)} ` +
    `via ${addressText(info.proxy?.peer)} v${info.proxy?.header.version ?? "-"}`;
}

/** A server behind the PROXY protocol over the in-memory transport, with a manual clock. */
function proxiedServer(
  proxyProtocol: ProxyProtocolOptions = { trusted: ["192.0.2.7"] },
  options: Omit<ServeOptions, "transport" | "proxyProtocol" | "clock"> = {},
) {
  const clock = new ManualClock();
  const seen: ConnInfo<Addr>[] = [];
  const handler: Handler = (_request, info) => {
    seen.push(info);
    return textResponse(describeInfo(info));
  };
  const { server, connect } = memoryServer(handler, { ...options, clock, proxyProtocol });
  return { server, connect, clock, seen };
}

/** Waits a few turns, then asserts that the connection was dropped unanswered. */
async function expectDropped(connection: MemoryConnection, what: string): Promise<void> {
  await settle(() => connection.closed, 1000);
  assert.ok(connection.destroyed, `${what}: the connection should be destroyed`);
  assert.equal(connection.output(), "", `${what}: nothing should be written`);
  assert.ok(connection.closed, `${what}: the connection should be closed`);
}

/** Shuts the server down within 2 s. */
const stop = (server: { shutdown(): Promise<void> }) =>
  withTimeout(server.shutdown(), 2000, "Server.shutdown()");

describe("the PROXY protocol gate over the in-memory transport", () => {
  test("a header and a request in one chunk: the handler sees the client from the header", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    connection.send(V1_HEADER + REQUEST);
    await expectOutput(
      connection,
      ok("203.0.113.9:4444 -> 10.0.0.1:443 via 192.0.2.7:40000 v1"),
      false,
    );
    assert.equal(seen.length, 1);
    const [info] = seen;
    assert.deepEqual(info.remoteAddr, tcp("203.0.113.9", 4444));
    assert.deepEqual(info.localAddr, tcp("10.0.0.1", 443));
    assert.deepEqual(info.proxy?.peer, PEER);
    assert.ok(info.proxy !== undefined);
    assert.deepEqual(
      plain(info.proxy.header),
      {
        ...expectHeader(1, "PROXY", tcp("203.0.113.9", 4444), tcp("10.0.0.1", 443)),
        size: V1_HEADER.length,
      },
    );
    assert.equal(info.secure, false);
    await stop(server);
  });

  test("a header split byte by byte, then the request: nothing reaches the handler before", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    const header = bytesOf(V1_HEADER);
    for (let i = 0; i < header.length; i++) {
      connection.sendBytes(header.subarray(i, i + 1));
      assert.equal(connection.destroyed, false, `destroyed after byte ${i}`);
    }
    await delay(5);
    assert.equal(seen.length, 0);
    assert.equal(connection.output(), "");
    connection.send(REQUEST);
    await expectOutput(
      connection,
      ok("203.0.113.9:4444 -> 10.0.0.1:443 via 192.0.2.7:40000 v1"),
      false,
    );
    await stop(server);
  });

  test("a version 2 header byte by byte, the request in the same last chunk: TLVs reach the handler", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    const header = v2({
      familyProtocol: 0x21,
      addresses: INET6_BLOCK,
      tlvs: [tlv(0x01, "http/1.1"), tlv(0x02, "example.com"), tlv(0x20, TLS_VALUE)],
    });
    for (let i = 0; i < header.length - 1; i++) connection.sendBytes(header.subarray(i, i + 1));
    connection.sendBytes(concatBytes(header.subarray(header.length - 1), bytesOf(REQUEST)));
    await expectOutput(
      connection,
      ok("2001:db8::9:4444 -> 2001:db8::1:443 via 192.0.2.7:40000 v2"),
      false,
    );
    const proxy = seen[0]?.proxy;
    assert.ok(proxy !== undefined);
    assert.equal(proxy.header.alpn, "http/1.1");
    assert.equal(proxy.header.authority, "example.com");
    assert.equal(proxy.header.tls?.commonName, "client.example");
    assert.equal(proxy.header.size, header.length);
    await stop(server);
  });

  test("two requests after one header on a kept connection both see the proxied client", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    connection.send(V1_HEADER + REQUEST + REQUEST);
    const body = "203.0.113.9:4444 -> 10.0.0.1:443 via 192.0.2.7:40000 v1";
    await expectOutput(connection, ok(body) + ok(body), false);
    assert.equal(seen.length, 2);
    await stop(server);
  });

  const TRUSTED_CASES: { name: string; trusted: string[]; accepted: boolean }[] = [
    { name: "an exact address", trusted: ["192.0.2.7"], accepted: true },
    { name: "a CIDR block", trusted: ["192.0.2.0/24"], accepted: true },
    { name: "0.0.0.0/0", trusted: ["0.0.0.0/0"], accepted: true },
    { name: "an IPv4-mapped IPv6 block", trusted: ["::ffff:192.0.2.0/120"], accepted: true },
    {
      name: "a second entry that matches",
      trusted: ["10.0.0.0/8", "192.0.2.7/32"],
      accepted: true,
    },
    { name: "another address", trusted: ["192.0.2.8"], accepted: false },
    { name: "a CIDR block next to it", trusted: ["192.0.3.0/24"], accepted: false },
    { name: "an IPv6 CIDR block", trusted: ["2001:db8::/32"], accepted: false },
    { name: "::/0, which no IPv4 peer is in", trusted: ["::/0"], accepted: false },
    { name: "an empty list", trusted: [], accepted: false },
  ];
  for (const c of TRUSTED_CASES) {
    const what = c.accepted ? "is served" : "is destroyed unread, the handler never called";
    test(`trusted as ${c.name}: the peer 192.0.2.7 ${what}`, async () => {
      const { server, connect, seen } = proxiedServer({ trusted: c.trusted });
      const connection = connect();
      if (!c.accepted) assert.ok(connection.destroyed, "destroyed as soon as accepted");
      connection.send(V1_HEADER + REQUEST);
      if (c.accepted) {
        await expectOutput(
          connection,
          ok("203.0.113.9:4444 -> 10.0.0.1:443 via 192.0.2.7:40000 v1"),
          false,
        );
        assert.equal(seen.length, 1);
      } else {
        await expectDropped(connection, "an untrusted peer");
        assert.equal(seen.length, 0);
      }
      await stop(server);
    });
  }

  const DROPPED_CASES: { name: string; bytes: string | Uint8Array }[] = [
    {
      name: "a malformed version 1 header",
      bytes: "PROXY TCP4 203.0.113.9 10.0.0.1 4444 080\r\n" + REQUEST,
    },
    {
      name: "a version 1 header with a bare LF",
      bytes: "PROXY TCP4 203.0.113.9 10.0.0.1 4444 443\n" + REQUEST,
    },
    {
      name: "a version 2 header with a wrong checksum",
      bytes: concatBytes(v2WithChecksum({ addresses: INET4_BLOCK }, 0xff), bytesOf(REQUEST)),
    },
    {
      name: "a version 2 header over maxHeaderBytes",
      bytes: v2({ addresses: INET4_BLOCK, tlvs: [tlv(0x04, new Uint8Array(5000))] }),
    },
    { name: "a request without a header", bytes: REQUEST },
    {
      name: "a version 1 line with no CRLF in 107 bytes",
      bytes: "PROXY UNKNOWN " + "x".repeat(200),
    },
  ];
  for (const c of DROPPED_CASES) {
    test(`${c.name}: destroyed, no output, the handler never called`, async () => {
      const { server, connect, seen } = proxiedServer();
      const connection = connect();
      if (typeof c.bytes === "string") connection.send(c.bytes);
      else connection.sendBytes(c.bytes);
      await expectDropped(connection, c.name);
      assert.equal(seen.length, 0);
      await stop(server);
    });
  }

  test("EOF in the middle of the header: closed, no output", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    connection.send(V1_HEADER.slice(0, 20));
    await delay(5);
    assert.equal(connection.destroyed, false);
    connection.sendEnd();
    await expectDropped(connection, "a header cut short");
    assert.equal(seen.length, 0);
    await stop(server);
  });

  test("EOF before any byte: closed, no output", async () => {
    const { server, connect } = proxiedServer();
    const connection = connect();
    connection.sendEnd();
    await expectDropped(connection, "no header at all");
    await stop(server);
  });

  test("a header that takes longer than the default timeout of 5000 ms: closed at 5000, not before", async () => {
    const { server, connect, clock } = proxiedServer();
    const connection = connect();
    connection.send(V1_HEADER.slice(0, 10));
    clock.advance(4999);
    await delay(5);
    assert.equal(connection.destroyed, false, "closed before the timeout");
    clock.advance(1);
    await expectDropped(connection, "a late header");
    await stop(server);
  });

  test("a header that takes longer than proxyProtocol.timeout 1000: closed at 1000, not before", async () => {
    const { server, connect, clock } = proxiedServer({ trusted: ["192.0.2.7"], timeout: 1000 });
    const connection = connect();
    clock.advance(999);
    await delay(5);
    assert.equal(connection.destroyed, false, "closed before the timeout");
    clock.advance(1);
    await expectDropped(connection, "no header in time");
    await stop(server);
  });

  test("the header timeout stops counting once the header is in", async () => {
    const { server, connect, clock } = proxiedServer({ trusted: ["192.0.2.7"], timeout: 1000 }, {
      idleTimeout: 60_000,
    });
    const connection = connect();
    connection.send(V1_HEADER);
    clock.advance(2000);
    await delay(5);
    assert.equal(connection.destroyed, false);
    connection.send(REQUEST);
    await expectOutput(
      connection,
      ok("203.0.113.9:4444 -> 10.0.0.1:443 via 192.0.2.7:40000 v1"),
      false,
    );
    await stop(server);
  });

  test("LOCAL: remoteAddr and localAddr are the connection's own, info.proxy says LOCAL", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    const header = v2({ versionCommand: 0x20, familyProtocol: 0x00 });
    connection.sendBytes(concatBytes(header, bytesOf(REQUEST)));
    await expectOutput(
      connection,
      ok("192.0.2.7:40000 -> 127.0.0.1:8080 via 192.0.2.7:40000 v2"),
      false,
    );
    const [info] = seen;
    assert.deepEqual(info.remoteAddr, PEER);
    assert.deepEqual(info.localAddr, MEMORY_LOCAL);
    assert.equal(info.proxy?.header.command, "LOCAL");
    await stop(server);
  });

  test("version 1 UNKNOWN: remoteAddr is the peer", async () => {
    const { server, connect, seen } = proxiedServer();
    const connection = connect();
    connection.send("PROXY UNKNOWN\r\n" + REQUEST);
    await expectOutput(
      connection,
      ok("192.0.2.7:40000 -> 127.0.0.1:8080 via 192.0.2.7:40000 v1"),
      false,
    );
    assert.equal(seen[0]?.proxy?.header.command, "PROXY");
    assert.equal(seen[0]?.proxy?.header.source, null);
    await stop(server);
  });

  test("maxConnectionsPerClient counts the client from the header, not the balancer", async () => {
    const { server, connect } = proxiedServer(undefined, { maxConnectionsPerClient: 1 });
    const body = (client: string) => ok(`${client}:4444 -> 10.0.0.1:443 via 192.0.2.7:40000 v1`);
    const header = (client: string) => `PROXY TCP4 ${client} 10.0.0.1 4444 443\r\n`;
    // Two different clients through the same balancer: both served.
    const first = connect();
    first.send(header("203.0.113.9") + REQUEST);
    await expectOutput(first, body("203.0.113.9"), false);
    const other = connect();
    other.send(header("203.0.113.10") + REQUEST);
    await expectOutput(other, body("203.0.113.10"), false);
    // The same client again, over its cap of 1: 503.
    const second = connect();
    second.send(header("203.0.113.9") + REQUEST);
    await settle(() => second.ended, 1000);
    assert.match(second.output(), /^HTTP\/1\.1 503 /, show(second.output()));
    assert.ok(second.ended, "the refused connection should be ended");
    // Once its first connection is gone, the client has its slot back.
    first.sendEnd();
    await settle(() => first.closed, 1000);
    assert.ok(first.closed, "the first connection should close on EOF");
    const third = connect();
    third.send(header("203.0.113.9") + REQUEST);
    await expectOutput(third, body("203.0.113.9"), false);
    await stop(server);
  });

  test("shutdown() while a header is pending drops it and resolves finished", async () => {
    const { server, connect, seen } = proxiedServer();
    await withTimeout(server.ready, 1000, "Server.ready");
    const connection = connect();
    connection.send(V1_HEADER.slice(0, 12));
    const shutdown = server.shutdown();
    await withTimeout(shutdown, 2000, "Server.shutdown() with a pending header");
    await withTimeout(server.finished, 1000, "Server.finished");
    assert.ok(connection.destroyed);
    assert.equal(connection.output(), "");
    assert.equal(seen.length, 0);
  });

  test("a connection accepted after shutdown() is destroyed unread", async () => {
    const { server, connect } = proxiedServer();
    await withTimeout(server.ready, 1000, "Server.ready");
    const shutdown = server.shutdown();
    const connection = connect();
    assert.ok(connection.destroyed);
    await withTimeout(shutdown, 2000, "Server.shutdown()");
  });

  const BAD_OPTIONS: { name: string; options: ProxyProtocolOptions; error: ErrorConstructor }[] = [
    { name: 'trusted "10.0.0.0/33"', options: { trusted: ["10.0.0.0/33"] }, error: TypeError },
    { name: 'trusted "::/129"', options: { trusted: ["::/129"] }, error: TypeError },
    { name: 'trusted "hello"', options: { trusted: ["hello"] }, error: TypeError },
    { name: 'trusted "1.2.3.4/8/9"', options: { trusted: ["1.2.3.4/8/9"] }, error: TypeError },
    { name: 'trusted "10.0.0.0/"', options: { trusted: ["10.0.0.0/"] }, error: TypeError },
    { name: 'trusted "10.0.0.0/-1"', options: { trusted: ["10.0.0.0/-1"] }, error: TypeError },
    { name: 'trusted "fe80::1%eth0"', options: { trusted: ["fe80::1%eth0"] }, error: TypeError },
    {
      name: "maxHeaderBytes 100",
      options: { trusted: [], maxHeaderBytes: 100 },
      error: RangeError,
    },
    {
      name: "maxHeaderBytes 65552",
      options: { trusted: [], maxHeaderBytes: 65552 },
      error: RangeError,
    },
    {
      name: "maxHeaderBytes 1000.5",
      options: { trusted: [], maxHeaderBytes: 1000.5 },
      error: RangeError,
    },
    { name: "timeout 0", options: { trusted: [], timeout: 0 }, error: RangeError },
    { name: "timeout -1", options: { trusted: [], timeout: -1 }, error: RangeError },
  ];
  for (const c of BAD_OPTIONS) {
    test(`serve() throws a ${c.error.name} for proxyProtocol ${c.name}`, () => {
      assert.throws(
        () => memoryServer(() => textResponse("x"), { proxyProtocol: c.options }),
        c.error,
      );
    });
  }

  test("serve() accepts maxHeaderBytes 232 and 65551, the bounds, and timeout Infinity", async () => {
    for (
      const options of [
        { trusted: ["192.0.2.7"], maxHeaderBytes: 232 },
        { trusted: ["192.0.2.7"], maxHeaderBytes: 16 + 0xffff },
        { trusted: ["192.0.2.7"], timeout: Infinity },
      ]
    ) {
      const { server } = proxiedServer(options);
      await stop(server);
    }
  });
});

//#endregion
//#region 3. End to end

/** The handler of the end-to-end tests: the addresses it was given, and the header's version. */
const describeHandler: Handler = (_request, info) => textResponse(describeInfo(info));

const REQUEST_CLOSE = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/** The single response in `received`: its status and body. */
function only(received: string): { status: number; body: string } {
  const { responses, rest } = parseResponses(received);
  assert.equal(responses.length, 1, `one response expected, got ${show(received, 400)}`);
  assert.equal(rest, "", `nothing after the response expected, got ${show(rest)}`);
  return { status: responses[0].status, body: responses[0].body };
}

function endToEndTests(transport: TransportName): void {
  const trusted = { proxyProtocol: { trusted: ["127.0.0.1"] } };

  test("a raw client's version 1 header names the client the handler sees", async () => {
    await harness(transport, describeHandler, trusted, async (h) => {
      const client = await h.connect();
      const clientPort = client.socket.localPort;
      await client.write(`PROXY TCP4 203.0.113.9 127.0.0.1 4444 ${h.port}\r\n` + REQUEST_CLOSE);
      await client.waitForClose();
      const { status, body } = only(client.text());
      assert.equal(status, 200);
      assert.equal(
        body,
        `203.0.113.9:4444 -> 127.0.0.1:${h.port} via 127.0.0.1:${clientPort} v1`,
      );
    });
  });

  test("a raw client's version 2 header names the client the handler sees", async () => {
    await harness(transport, describeHandler, trusted, async (h) => {
      const client = await h.connect();
      const clientPort = client.socket.localPort;
      const header = v2({
        addresses: inet4("203.0.113.9", 4444, "127.0.0.1", h.port),
        tlvs: [tlv(0x02, "example.com")],
      });
      await client.write(concatBytes(header, bytesOf(REQUEST_CLOSE)));
      await client.waitForClose();
      const { status, body } = only(client.text());
      assert.equal(status, 200);
      assert.equal(
        body,
        `203.0.113.9:4444 -> 127.0.0.1:${h.port} via 127.0.0.1:${clientPort} v2`,
      );
    });
  });

  test("a header and a request written apart, 20 ms between, are read as one connection", async () => {
    await harness(transport, describeHandler, trusted, async (h) => {
      const client = await h.connect();
      const header = bytesOf(`PROXY TCP6 2001:db8::9 ::1 4444 ${h.port}\r\n`);
      await client.write(header.subarray(0, 9));
      await delay(20);
      await client.write(header.subarray(9));
      await delay(20);
      await client.write(REQUEST_CLOSE);
      await client.waitForClose();
      const { body } = only(client.text());
      assert.match(body, /^2001:db8::9:4444 -> ::1:\d+ via 127\.0\.0\.1:\d+ v1$/);
    });
  });

  test("curl --haproxy-protocol is served, with info.proxy.header.version 1", async () => {
    await harness(transport, describeHandler, trusted, async (h) => {
      const body = await runCommand("curl", [
        "--http1.1",
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--haproxy-protocol",
        `http://127.0.0.1:${h.port}/`,
      ]);
      // curl names its own connection: 127.0.0.1 and its port on both sides.
      assert.match(
        body,
        new RegExp(
          `^127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:${h.port} via 127\\.0\\.0\\.1:\\d+ v1$`,
        ),
      );
    });
  });

  test("a client that sends no header gets the socket closed with no bytes", async () => {
    await harness(transport, describeHandler, trusted, async (h) => {
      const received = await h.exchange(REQUEST_CLOSE);
      assert.equal(received, "");
    });
  });

  test("a peer that is not trusted gets the socket closed with no bytes, even with a header", async () => {
    await harness(
      transport,
      describeHandler,
      { proxyProtocol: { trusted: ["10.0.0.0/8"] } },
      async (h) => {
        const received = await h.exchange(
          `PROXY TCP4 203.0.113.9 127.0.0.1 4444 ${h.port}\r\n` + REQUEST_CLOSE,
        );
        assert.equal(received, "");
      },
    );
  });

  test("a trusted peer that sends nothing is closed after proxyProtocol.timeout, with no bytes", async () => {
    const options = { proxyProtocol: { trusted: ["127.0.0.1"], timeout: 200 } };
    await harness(transport, describeHandler, options, async (h) => {
      const client = await h.connect();
      await client.waitForClose(3000, "the server to close a connection that sent no header");
      assert.equal(textOf(client.chunks), "");
    });
  });
}

for (const transport of transportsHere()) {
  describe(`the PROXY protocol end to end over the ${transport} transport (${runtimeName()})`, () => {
    endToEndTests(transport);
  });
}

//#endregion
