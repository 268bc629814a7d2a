// ttrpc framing (containerd/ttrpc PROTOCOL.md): a 10-byte header, then data.
//   u32 BE length | u32 BE stream id | u8 type | u8 flags
// Client-initiated streams have odd ids. Unary calls are one Request frame and
// one Response frame on the same stream.

export const HEADER_LENGTH = 10;
/** containerd/ttrpc messageLengthMax. */
export const MAX_MESSAGE_LENGTH = 4 << 20;

export const FrameType = { Request: 1, Response: 2, Data: 3 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const Flags = { RemoteClosed: 0x1, RemoteOpen: 0x2, NoData: 0x4 } as const;

export interface FrameHeader {
  readonly length: number;
  readonly streamId: number;
  readonly type: number;
  readonly flags: number;
}

export function encodeFrame(streamId: number, type: FrameType, data: Uint8Array, flags = 0): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
  out.writeUInt32BE(data.length, 0);
  out.writeUInt32BE(streamId >>> 0, 4);
  out[8] = type;
  out[9] = flags;
  out.set(data, HEADER_LENGTH);
  return out;
}

export type FrameEvent =
  | { kind: 'frame'; header: FrameHeader; data: Buffer }
  /** A frame longer than the limit: its data was skipped, the header is kept so the stream can be answered. */
  | { kind: 'oversized'; header: FrameHeader };

/**
 * Incremental frame reader. Feed it socket chunks; it yields whole frames.
 * Oversized data is skipped as it arrives, never buffered.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private skipping = 0;
  private readonly maxLength: number;

  constructor(maxLength = MAX_MESSAGE_LENGTH) {
    this.maxLength = maxLength;
  }

  *push(chunk: Buffer): Generator<FrameEvent> {
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, chunk.length);
      this.skipping -= n;
      chunk = chunk.subarray(n);
    }
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    while (this.skipping === 0 && this.buffered >= HEADER_LENGTH) {
      const head = this.peek(HEADER_LENGTH);
      const header: FrameHeader = {
        length: head.readUInt32BE(0),
        streamId: head.readUInt32BE(4),
        type: head[8]!,
        flags: head[9]!,
      };
      if (header.length > this.maxLength) {
        this.consume(HEADER_LENGTH);
        const drop = Math.min(header.length, this.buffered);
        this.consume(drop);
        this.skipping = header.length - drop;
        yield { kind: 'oversized', header };
        continue;
      }
      if (this.buffered < HEADER_LENGTH + header.length) return;
      this.consume(HEADER_LENGTH);
      yield { kind: 'frame', header, data: this.consume(header.length) };
    }
  }

  /** Bytes held for an incomplete frame. */
  get pending(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private consume(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}
