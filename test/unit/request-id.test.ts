import test from 'ava';
import { randomUUID } from '../../proxy/http/request-id.js';

test('a request id is a random version-4 UUID (RFC 9562: version nibble 4, variant bits 10)', (t) => {
  for (let i = 0; i < 200; i++) t.regex(randomUUID(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('request ids do not repeat', (t) => {
  const ids = new Set(Array.from({ length: 1000 }, () => randomUUID()));
  t.is(ids.size, 1000);
});
