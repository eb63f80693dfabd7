// The chain's canonical codec in the browser: every object is a msgpack array of its
// fields in order (core/codec.py). Encoding must be byte-identical to Python's
// msgpack.packb(use_bin_type=True); decoding accepts only bytes that re-encode to
// themselves, as Wire.decode does.
import { decode, encode } from "@msgpack/msgpack";

const OPTS = { useBigInt64: true };

// Decoded integers above 2**53 stay BigInt, smaller ones are Numbers.
function normalize(value) {
  if (typeof value === "bigint") {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
  if (Array.isArray(value)) return value.map(normalize);
  return value;
}

// With useBigInt64, @msgpack/msgpack writes a Number of 2**32 or more as a float and a
// BigInt as uint64 (0xcf), the minimal form Python writes from 2**32 on: integers that
// large are packed as BigInt.
function forPacking(value) {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0x100000000) {
    return BigInt(value);
  }
  if (typeof value === "bigint" && value < 0x100000000n) return Number(value);
  if (Array.isArray(value)) return value.map(forPacking);
  return value;
}

export function pack(raw) {
  return encode(forPacking(raw), OPTS);
}

export class DecodeError extends Error {}

// Unpack canonical bytes: arrays, ints, bytes, strings, bools and nil only; the
// bytes must be exactly what packing the result gives back.
export function unpack(bytes) {
  let raw;
  try {
    raw = normalize(decode(bytes, OPTS));
  } catch (err) {
    throw new DecodeError(`not valid msgpack: ${err.message}`);
  }
  check(raw);
  let again;
  try {
    again = pack(raw);
  } catch (err) {
    // Nested deeper than the encoder goes: no record is.
    throw new DecodeError(`cannot be encoded again: ${err.message}`);
  }
  if (!equalBytes(again, bytes)) throw new DecodeError("non-canonical encoding");
  return raw;
}

function check(raw) {
  if (raw === null || typeof raw === "boolean" || typeof raw === "string") return;
  if (typeof raw === "number" || typeof raw === "bigint") {
    if (raw < 0 || (typeof raw === "number" && !Number.isInteger(raw))) {
      throw new DecodeError("only unsigned integers are allowed");
    }
    return;
  }
  if (raw instanceof Uint8Array) return;
  if (Array.isArray(raw)) return raw.forEach(check);
  throw new DecodeError("maps and extension types are not allowed");
}

// A decoded object's fields, checked for kind (and exact length for bytes).
export function fields(raw, spec, where) {
  if (!Array.isArray(raw) || raw.length !== spec.length) {
    throw new DecodeError(`${where}: expected an array of ${spec.length} fields`);
  }
  const out = {};
  spec.forEach(([name, kind], i) => {
    out[name] = checkField(raw[i], kind, `${where}.${name}`);
  });
  return out;
}

function checkField(v, kind, where) {
  if (kind.endsWith("?")) return v === null ? null : checkField(v, kind.slice(0, -1), where);
  if (kind === "int") {
    if (typeof v !== "number" && typeof v !== "bigint") throw new DecodeError(`${where}: int`);
    return v;
  }
  if (kind === "str") {
    if (typeof v !== "string") throw new DecodeError(`${where}: str`);
    return v;
  }
  if (kind === "bool") {
    if (typeof v !== "boolean") throw new DecodeError(`${where}: bool`);
    return v;
  }
  if (kind === "list") {
    if (!Array.isArray(v)) throw new DecodeError(`${where}: array`);
    return v;
  }
  const m = /^bytes(\d*)$/.exec(kind);
  if (m) {
    if (!(v instanceof Uint8Array)) throw new DecodeError(`${where}: bytes`);
    if (m[1] && v.length !== Number(m[1])) {
      throw new DecodeError(`${where}: expected ${m[1]} bytes, got ${v.length}`);
    }
    return v;
  }
  throw new Error(`unknown field kind ${kind}`);
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function unhex(text) {
  if (typeof text !== "string" || text.length % 2 || /[^0-9a-fA-F]/.test(text)) {
    throw new DecodeError("not hex");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function u64be(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

export function u32be(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

export const utf8 = (text) => new TextEncoder().encode(text);
