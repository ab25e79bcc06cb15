import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Context, TaskFailure } from 'sfn-wasm-guest';

import { greet } from '../src/handler.js';

test('greets by name', async () => {
  const ctx = Context.forTests({ input: { hello: 'World' } });
  assert.deepEqual(await greet({ hello: 'World' }, ctx), { greeting: 'Hello, World' });
  assert.equal(ctx.heartbeats, 1);
});

test('an empty name fails the task', async () => {
  await assert.rejects(greet({ hello: '' }, Context.forTests()), (err) => {
    assert.ok(err instanceof TaskFailure);
    assert.equal(err.error, 'InvalidName');
    return true;
  });
});
