/**
 * Declarative layouts for C structs and netlink attribute sets.
 *
 * Every kernel struct and attribute set synhold speaks is declared once, as
 * data, next to a comment naming its uapi definition; these two codecs turn the
 * declarations into encoders and decoders. Decoding never loses information:
 * attributes the declaration does not know are kept as raw bytes in `unknown`.
 */
import { DecodeError, EncodeError } from './errors.js';

// ---------------------------------------------------------------------------
// Structs
// ---------------------------------------------------------------------------

/** Scalar field types. `be*` are network byte order; everything else is host (little-endian) order. */
export type ScalarType = 'u8' | 'u16' | 'u32' | 'u64' | 's8' | 's16' | 's32' | 'be16' | 'be32';

export type FieldSpec = readonly [name: string, type: ScalarType] | readonly [name: string, type: 'bytes', length: number];

type FieldValue<T> = T extends 'u64' ? bigint : T extends 'bytes' ? Buffer : number;

export type StructValue<F extends readonly FieldSpec[]> = {
  [K in F[number] as K[0]]: FieldValue<K[1]>;
};

const SCALAR_SIZE: Record<ScalarType, number> = { u8: 1, s8: 1, u16: 2, s16: 2, be16: 2, u32: 4, s32: 4, be32: 4, u64: 8 };

const SCALAR_RANGE: Record<Exclude<ScalarType, 'u64'>, [number, number]> = {
  u8: [0, 0xff],
  s8: [-0x80, 0x7f],
  u16: [0, 0xffff],
  be16: [0, 0xffff],
  s16: [-0x8000, 0x7fff],
  u32: [0, 0xffffffff],
  be32: [0, 0xffffffff],
  s32: [-0x80000000, 0x7fffffff],
};

function readScalar(buf: Buffer, off: number, t: ScalarType): number | bigint {
  switch (t) {
    case 'u8':
      return buf.readUInt8(off);
    case 's8':
      return buf.readInt8(off);
    case 'u16':
      return buf.readUInt16LE(off);
    case 's16':
      return buf.readInt16LE(off);
    case 'be16':
      return buf.readUInt16BE(off);
    case 'u32':
      return buf.readUInt32LE(off);
    case 's32':
      return buf.readInt32LE(off);
    case 'be32':
      return buf.readUInt32BE(off);
    case 'u64':
      return buf.readBigUInt64LE(off);
  }
}

function writeScalar(buf: Buffer, off: number, t: ScalarType, v: unknown, what: string): void {
  if (t === 'u64') {
    const b = typeof v === 'bigint' ? v : BigInt(v as number);
    if (b < 0n || b > 0xffffffffffffffffn) throw new EncodeError(what, `${b} is out of range for u64`);
    buf.writeBigUInt64LE(b, off);
    return;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new EncodeError(what, `expected an integer, got ${String(v)}`);
  const [lo, hi] = SCALAR_RANGE[t];
  if (v < lo || v > hi) throw new EncodeError(what, `${v} is out of range for ${t} (${lo}..${hi})`);
  switch (t) {
    case 'u8':
      buf.writeUInt8(v, off);
      break;
    case 's8':
      buf.writeInt8(v, off);
      break;
    case 'u16':
      buf.writeUInt16LE(v, off);
      break;
    case 's16':
      buf.writeInt16LE(v, off);
      break;
    case 'be16':
      buf.writeUInt16BE(v, off);
      break;
    case 'u32':
      buf.writeUInt32LE(v, off);
      break;
    case 's32':
      buf.writeInt32LE(v, off);
      break;
    case 'be32':
      buf.writeUInt32BE(v, off);
      break;
  }
}

export interface StructCodec<F extends readonly FieldSpec[]> {
  /** The uapi name, used in error messages. */
  readonly name: string;
  readonly size: number;
  readonly fields: F;
  /** Missing fields encode as zero. */
  encode(value: Partial<StructValue<F>>): Buffer;
  encodeInto(buf: Buffer, offset: number, value: Partial<StructValue<F>>): void;
  /** Throws DecodeError when fewer than `size` bytes are available. */
  decode(buf: Buffer, offset?: number): StructValue<F>;
}

export function defineStruct<const F extends readonly FieldSpec[]>(name: string, fields: F): StructCodec<F> {
  const layout: { name: string; type: ScalarType | 'bytes'; size: number; offset: number }[] = [];
  let size = 0;
  for (const f of fields) {
    const fsize = f[1] === 'bytes' ? f[2] : SCALAR_SIZE[f[1]];
    layout.push({ name: f[0], type: f[1], size: fsize, offset: size });
    size += fsize;
  }
  const codec: StructCodec<F> = {
    name,
    size,
    fields,
    encode(value) {
      const out = Buffer.alloc(size);
      codec.encodeInto(out, 0, value);
      return out;
    },
    encodeInto(buf, offset, value) {
      const v = value as Record<string, unknown>;
      for (const key of Object.keys(v)) {
        if (!layout.some((l) => l.name === key)) throw new EncodeError(name, `unknown field "${key}"`);
      }
      for (const l of layout) {
        const fv = v[l.name];
        if (fv === undefined) continue;
        if (l.type === 'bytes') {
          if (!Buffer.isBuffer(fv) || fv.length > l.size) throw new EncodeError(`${name}.${l.name}`, `expected at most ${l.size} bytes`);
          fv.copy(buf, offset + l.offset);
        } else {
          writeScalar(buf, offset + l.offset, l.type, fv, `${name}.${l.name}`);
        }
      }
    },
    decode(buf, offset = 0) {
      if (buf.length - offset < size) {
        throw new DecodeError(name, offset, `needs ${size} bytes, ${Math.max(0, buf.length - offset)} available`);
      }
      const out: Record<string, unknown> = {};
      for (const l of layout) {
        out[l.name] =
          l.type === 'bytes' ? Buffer.from(buf.subarray(offset + l.offset, offset + l.offset + l.size)) : readScalar(buf, offset + l.offset, l.type);
      }
      return out as StructValue<F>;
    },
  };
  return codec;
}

// ---------------------------------------------------------------------------
// Attributes (struct nlattr { __u16 nla_len; __u16 nla_type; } + payload, 4-aligned)
// ---------------------------------------------------------------------------

export const NLA_HDRLEN = 4;
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

/** An attribute kept as it came: its type (flags masked off) and payload. */
export interface RawAttribute {
  type: number;
  data: Buffer;
}

type ScalarKind = 'u8' | 'u16' | 'u32' | 's32' | 'be16' | 'be32';

export type AttrSpec =
  | { type: number; kind: ScalarKind | 'u64' | 'flag'; multi?: boolean }
  /** NUL-terminated on the wire unless `noNul` (some attributes, e.g. IFLA_INFO_KIND as ip sends it, carry none). */
  | { type: number; kind: 'string'; multi?: boolean; noNul?: boolean }
  /** Opaque bytes; `nestedFlag` marks them NLA_F_NESTED on the wire (a nest decoded by another module). */
  | { type: number; kind: 'binary'; multi?: boolean; nestedFlag?: boolean }
  | { type: number; kind: 'struct'; struct: StructCodec<readonly FieldSpec[]>; multi?: boolean }
  | { type: number; kind: 'nested'; set: () => AttributeSet<AttrSpecMap>; multi?: boolean; nestedFlag?: boolean }
  /** Nested attributes whose types are positions 1..N (TCA_ACT_TAB, TCA_STAB_DATA...). */
  | { type: number; kind: 'array'; set: () => AttributeSet<AttrSpecMap>; nestedFlag?: boolean; multi?: never };

export type AttrSpecMap = Record<string, AttrSpec>;

type SingleValue<S> = S extends { kind: 'struct'; struct: StructCodec<infer F> }
  ? StructValue<F>
  : S extends { kind: 'nested'; set: () => AttributeSet<infer N> }
    ? AttrValues<N>
    : S extends { kind: 'array'; set: () => AttributeSet<infer N> }
      ? AttrValues<N>[]
      : S extends { kind: 'string' }
        ? string
        : S extends { kind: 'u64' }
          ? bigint
          : S extends { kind: 'binary' }
            ? Buffer
            : S extends { kind: 'flag' }
              ? true
              : number;

export type AttrValues<M extends AttrSpecMap> = {
  -readonly [K in keyof M]?: M[K] extends { multi: true } ? SingleValue<M[K]>[] : SingleValue<M[K]>;
} & { unknown?: RawAttribute[] };

export interface AttributeSet<M extends AttrSpecMap> {
  readonly name: string;
  readonly spec: M;
  /** Encodes in the order of `values`' own keys, so callers control the order (tc's order, for golden tests). */
  encode(values: AttrValues<M>): Buffer;
  decode(buf: Buffer): AttrValues<M>;
}

export function encodeAttr(type: number, payload: Buffer): Buffer {
  const len = NLA_HDRLEN + payload.length;
  if (len > 0xffff) throw new EncodeError(`attribute ${type}`, `payload of ${payload.length} bytes exceeds nla_len`);
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, NLA_HDRLEN);
  return out;
}

/** Splits an attribute stream; throws DecodeError on a length that overruns. */
export function splitAttributes(buf: Buffer, what: string): RawAttribute[] {
  const out: RawAttribute[] = [];
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw new DecodeError(what, off, `attribute type ${type} length ${len} overruns the ${buf.length - off} bytes left`);
    }
    out.push({ type, data: buf.subarray(off + NLA_HDRLEN, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

function encodeScalarAttr(kind: ScalarKind, v: unknown, what: string): Buffer {
  const out = Buffer.alloc(SCALAR_SIZE[kind]);
  writeScalar(out, 0, kind, v, what);
  return out;
}

/** One attribute of a set, by its spec (`what` names it in errors: set.key). */
function encodeOne(what: string, s: AttrSpec, v: unknown): Buffer {
  switch (s.kind) {
    case 'string':
      if (typeof v !== 'string') throw new EncodeError(what, 'expected a string');
      return encodeAttr(s.type, Buffer.from(s.noNul ? v : `${v}\0`, 'utf8'));
    case 'binary':
      if (!Buffer.isBuffer(v)) throw new EncodeError(what, 'expected a Buffer');
      return encodeAttr(s.type | (s.nestedFlag ? NLA_F_NESTED : 0), v);
    case 'flag':
      return encodeAttr(s.type, Buffer.alloc(0));
    case 'u64': {
      const b = Buffer.alloc(8);
      writeScalar(b, 0, 'u64', v, what);
      return encodeAttr(s.type, b);
    }
    case 'struct':
      return encodeAttr(s.type, s.struct.encode(v as never));
    case 'nested':
      return encodeAttr(s.type | (s.nestedFlag ? NLA_F_NESTED : 0), s.set().encode(v as never));
    case 'array': {
      if (!Array.isArray(v)) throw new EncodeError(what, 'expected an array');
      const inner = s.set();
      const parts = v.map((item, i) => encodeAttr((i + 1) | (s.nestedFlag ? NLA_F_NESTED : 0), inner.encode(item)));
      return encodeAttr(s.type | (s.nestedFlag ? NLA_F_NESTED : 0), Buffer.concat(parts));
    }
    default:
      return encodeAttr(s.type, encodeScalarAttr(s.kind, v, what));
  }
}

/** One attribute's payload, by its spec. */
function decodeOne(what: string, s: AttrSpec, data: Buffer): unknown {
  const need = (n: number) => {
    if (data.length < n) throw new DecodeError(what, 0, `needs ${n} bytes, got ${data.length}`);
  };
  switch (s.kind) {
    case 'string': {
      const end = data.indexOf(0);
      return data.toString('utf8', 0, end < 0 ? data.length : end);
    }
    case 'binary':
      return Buffer.from(data);
    case 'flag':
      return true;
    case 'u64':
      need(8);
      return data.readBigUInt64LE(0);
    case 'struct':
      return s.struct.decode(data);
    case 'nested':
      return s.set().decode(data);
    case 'array': {
      const inner = s.set();
      return splitAttributes(data, what).map((a) => inner.decode(a.data));
    }
    default:
      need(SCALAR_SIZE[s.kind]);
      return readScalar(data, 0, s.kind);
  }
}

export function defineAttributes<const M extends AttrSpecMap>(name: string, spec: M): AttributeSet<M> {
  const byType = new Map<number, [string, AttrSpec]>();
  for (const [key, s] of Object.entries(spec)) {
    if (byType.has(s.type)) throw new Error(`${name}: attribute type ${s.type} declared twice`);
    byType.set(s.type, [key, s]);
  }

  return {
    name,
    spec,
    encode(values) {
      const parts: Buffer[] = [];
      for (const [key, v] of Object.entries(values as Record<string, unknown>)) {
        if (v === undefined) continue;
        if (key === 'unknown') {
          for (const raw of v as RawAttribute[]) parts.push(encodeAttr(raw.type, raw.data));
          continue;
        }
        const s = spec[key];
        if (!s) throw new EncodeError(name, `unknown attribute "${key}"`);
        if (s.multi) {
          if (!Array.isArray(v)) throw new EncodeError(`${name}.${key}`, 'expected an array (multi attribute)');
          for (const item of v) parts.push(encodeOne(`${name}.${key}`, s, item));
        } else {
          parts.push(encodeOne(`${name}.${key}`, s, v));
        }
      }
      return Buffer.concat(parts);
    },
    decode(buf) {
      const out: Record<string, unknown> = {};
      for (const raw of splitAttributes(buf, name)) {
        const known = byType.get(raw.type);
        if (!known) {
          ((out.unknown ??= []) as RawAttribute[]).push({ type: raw.type, data: Buffer.from(raw.data) });
          continue;
        }
        const [key, s] = known;
        const v = decodeOne(`${name}.${key}`, s, raw.data);
        if (s.multi) ((out[key] ??= []) as unknown[]).push(v);
        else out[key] = v;
      }
      return out as AttrValues<M>;
    },
  };
}
