// `sfn-wasm-guest/http` in Node.js, as a handler's own tests use it: stubbed, and over
// Node's fetch against a local server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';

import { get, request, stub, HttpError, Response } from 'sfn-wasm-guest/http';

test('a stub sees the request in its normal form and answers it', async () => {
  const seen = [];
  const restore = stub((req) => {
    seen.push(req);
    return { status: 201, headers: { 'Content-Type': 'application/json' }, body: '{"id": 7}' };
  });
  try {
    const response = await request('post', 'https://api.example.com/orders?x=1', {
      headers: { 'X-Key': 'k' },
      body: 'order',
    });
    assert.ok(response instanceof Response);
    assert.equal(response.status, 201);
    assert.equal(response.ok, true);
    assert.deepEqual(response.headers, { 'content-type': 'application/json' });
    assert.deepEqual(response.json(), { id: 7 });
    assert.equal(seen.length, 1);
    assert.equal(seen[0].method, 'POST');
    assert.equal(seen[0].url, 'https://api.example.com/orders?x=1');
    assert.deepEqual(seen[0].headers, { 'x-key': 'k' });
    assert.equal(new TextDecoder().decode(seen[0].body), 'order');
  } finally {
    restore();
  }
});

test('a stub that throws an HttpError acts out a failure', async () => {
  const restore = stub(() => {
    throw new HttpError('HTTP-request-denied');
  });
  try {
    await assert.rejects(get('https://elsewhere.example.com/'), (err) => {
      assert.ok(err instanceof HttpError);
      assert.equal(err.name, 'HTTP-request-denied');
      return true;
    });
  } finally {
    restore();
  }
});

test('without a stub, requests go out through fetch', async () => {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      res.writeHead(200, { 'x-method': req.method });
      res.end(`${req.url} ${body}`);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  try {
    const response = await request('PUT', `http://127.0.0.1:${port}/a?b=c`, { body: 'hi' });
    assert.equal(response.status, 200);
    assert.equal(response.headers['x-method'], 'PUT');
    assert.equal(response.text(), '/a?b=c hi');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  // Nothing listens there now.
  await assert.rejects(get(`http://127.0.0.1:${port}/`), (err) => {
    assert.equal(err.name, 'connection-refused');
    return true;
  });
});

test('overlapping stubs are taken away in any order', async () => {
  const first = stub(() => ({ body: 'first' }));
  const second = stub(() => ({ body: 'second' }));
  assert.equal((await get('https://a.example.com/')).text(), 'second');
  first();
  assert.equal((await get('https://a.example.com/')).text(), 'second');
  second();
  // No stub left: the request goes out (and finds nothing on port 9).
  await assert.rejects(get('http://127.0.0.1:9/'), HttpError);
});

test('only http and https URLs are sent', async () => {
  await assert.rejects(get('wss://a.example.com/'), TypeError);
  await assert.rejects(get('file:///etc/passwd'), TypeError);
});
