// JSON parsing that refuses duplicate object keys. JSON.parse keeps the last
// duplicate silently, so two parsers can read different values from the same
// signed bytes; containers/image rejects duplicates in policies and payloads,
// and so do we. Paths are written the way error messages show them.

export type JsonPath = ReadonlyArray<string | number>;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** "$.transports.docker[\"quay.io/x\"][0]" */
export function formatPath(path: JsonPath): string {
  return '$' + path.map((p) => (typeof p === 'number' ? `[${p}]` : IDENT.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`)).join('');
}

export class StrictJsonError extends Error {
  readonly path: JsonPath;
  constructor(path: JsonPath, message: string) {
    super(`${formatPath(path)}: ${message}`);
    this.path = path;
    this.name = 'StrictJsonError';
  }
}

interface Frame {
  readonly keys: Set<string> | undefined;
  key: string | number;
  expectKey: boolean;
}

/**
 * The path of the first duplicate key, if any. Runs only on text JSON.parse
 * accepted, so it can skip everything but strings and brackets.
 */
function findDuplicate(text: string): { path: JsonPath; key: string } | undefined {
  const stack: Frame[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const top = stack.at(-1);
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return { path: [...stack.slice(0, -1).map((f) => f.key), key], key };
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      stack.push({ keys: c === 0x7b ? new Set() : undefined, key: c === 0x7b ? '' : 0, expectKey: c === 0x7b });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack.at(-1);
      if (top?.keys) top.expectKey = true;
      else if (top) top.key = (top.key as number) + 1;
    }
  }
  return undefined;
}

/** JSON.parse, plus: duplicate keys anywhere are an error naming their path. */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StrictJsonError([], `not valid JSON (${(err as Error).message.split('\n')[0]})`);
  }
  const dup = findDuplicate(text);
  if (dup) throw new StrictJsonError(dup.path, 'duplicate key');
  return value;
}

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Check that an object has only the allowed keys and all the required ones;
 * the error names the path and the offending key.
 */
export function checkKeys(v: unknown, path: JsonPath, allowed: readonly string[], required: readonly string[] = []): Record<string, unknown> {
  if (!isObject(v)) throw new StrictJsonError(path, `expected an object, got ${describe(v)}`);
  for (const k of Object.keys(v)) if (!allowed.includes(k)) throw new StrictJsonError([...path, k], 'unknown field');
  for (const k of required) if (!Object.hasOwn(v, k)) throw new StrictJsonError(path, `missing field ${JSON.stringify(k)}`);
  return v;
}

export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return v.length === 0 ? 'an empty array' : 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v).slice(0, 60)}`;
}

export function getString(obj: Record<string, unknown>, key: string, path: JsonPath): string {
  const v = obj[key];
  if (typeof v !== 'string') throw new StrictJsonError([...path, key], `expected a string, got ${describe(v)}`);
  return v;
}
