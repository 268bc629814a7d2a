// Duplicate keys are refused wherever they are, with their path.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseStrictJson, StrictJsonError } from '../../agent/src/signature/strict-json.ts';

const dup = (text: string, path: string): void => {
  assert.throws(() => parseStrictJson(text), (err: unknown) => err instanceof StrictJsonError && err.message === `${path}: duplicate key`, text);
};

test('duplicate keys at any depth, with the JSON path', () => {
  dup('{"a":1,"a":2}', '$.a');
  dup('{"a":{"b":1,"c":{"d":[1,{"e":1,"e":1}]}}}', '$.a.c.d[1].e');
  dup('[0, {"x": "y"}, {"k": 1, "k": 2}]', '$[2].k');
  dup('{"a b":{"\\u0061":1,"a":2}}', '$["a b"].a');
  dup('{"s":"{\\"q\\":1,\\"q\\":2}","t":{"x":1,"x":1}}', '$.t.x');
});

test('same keys in different objects, strings that look like JSON, and plain values are fine', () => {
  assert.deepEqual(parseStrictJson('{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}'), { a: { k: 1 }, b: { k: 2 }, c: [{ k: 1 }, { k: 2 }] });
  assert.deepEqual(parseStrictJson('{"s":"{\\"k\\":1,\\"k\\":2}","e":"\\\\"}'), { s: '{"k":1,"k":2}', e: '\\' });
  assert.equal(parseStrictJson('"x"'), 'x');
  assert.throws(() => parseStrictJson('{"a":'), /\$: not valid JSON/);
});
