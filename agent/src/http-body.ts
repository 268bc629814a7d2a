// Reading a whole HTTP response body into memory, bounded: the registry, the
// signature lookaside and the KBS client each refuse bodies past their cap.

/** A response body that can be abandoned (undici's BodyReadable is one). */
export interface DestroyableBody {
  destroy(err?: Error): unknown;
}

/**
 * Collect `chunks` (by default the body itself) up to `max` bytes. One byte
 * more destroys `body` and throws what `tooLarge()` returns.
 */
export async function collectBody(body: DestroyableBody & AsyncIterable<unknown>, max: number, tooLarge: () => Error, chunks: AsyncIterable<unknown> = body): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of chunks) {
    const c = chunk as Buffer;
    total += c.length;
    if (total > max) {
      body.destroy();
      throw tooLarge();
    }
    parts.push(c);
  }
  return Buffer.concat(parts, total);
}
