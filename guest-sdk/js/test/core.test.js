// The SDK's wrapper against a recording toolkit: what each kind of handler result answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as settled } from 'node:timers/promises';

import { bind, Context, TaskFailure, ToolkitError } from '../src/core.js';
import { handler as hostless } from '../src/index.js';

function recorder({ refuse } = {}) {
  const calls = [];
  return {
    calls,
    success(output) {
      calls.push(['success', output]);
      if (refuse) throw { payload: refuse };
    },
    failure(error, cause) {
      calls.push(['failure', error, cause]);
    },
    heartbeat() {
      throw { payload: { tag: 'task-closed', val: 'TaskTimedOut' } };
    },
    cancelled: () => false,
    checkpoint() {},
    lastCheckpoint: () => undefined,
  };
}

function task(input) {
  return { input, activityArn: 'arn', workerName: 'w:1', taskId: 't', deadlineMs: 1500n };
}

async function run(fn, input, toolkit = recorder()) {
  bind(toolkit)(fn)(task(input));
  await settled();
  return toolkit.calls;
}

test('a returned value answers success with its JSON', async () => {
  const calls = await run(async (input) => ({ greeting: `Hello, ${input.hello}` }), '{"hello":"X"}');
  assert.deepEqual(calls, [['success', '{"greeting":"Hello, X"}']]);
});

test('a thrown TaskFailure answers failure with its name and cause', async () => {
  const calls = await run(() => {
    throw new TaskFailure('InvalidName', 'hello must not be empty');
  }, '{}');
  assert.deepEqual(calls, [['failure', 'InvalidName', 'hello must not be empty']]);
});

test('any other thrown value answers HandlerError with its message and stack', async () => {
  const [[kind, error, cause]] = await run(async () => {
    throw new RangeError('out of range on purpose');
  }, '{}');
  assert.equal(kind, 'failure');
  assert.equal(error, 'SfnWasmHost.HandlerError');
  assert.match(cause, /^RangeError: out of range on purpose\n/);
  assert.match(cause, /core\.test\.js/);
  const [[, , text]] = await run(() => {
    throw 'a plain string';
  }, '{}');
  assert.equal(text, 'a plain string');
});

test('an input that is not JSON answers InvalidInput naming the parse error', async () => {
  let called = false;
  const calls = await run(() => {
    called = true;
  }, '{"hello":');
  assert.equal(called, false);
  assert.equal(calls[0][1], 'SfnWasmHost.InvalidInput');
  assert.match(calls[0][2], /^the task input is not JSON: /);
});

test('an output that is not JSON, or that the host refuses, answers HandlerError', async () => {
  const [[, error, cause]] = await run(() => ({ n: 1n }), '{}');
  assert.equal(error, 'SfnWasmHost.HandlerError');
  assert.match(cause, /output is not JSON/);
  const refused = await run(() => 'x'.repeat(10), '{}', recorder({ refuse: { tag: 'invalid-output', val: 'too long' } }));
  assert.deepEqual(refused[1], ['failure', 'SfnWasmHost.HandlerError', "the handler's output was refused: too long"]);
});

test('the context gives the deadline in ms and turns toolkit errors into ToolkitError', async () => {
  let seen;
  await run((input, ctx) => {
    seen = { deadline: ctx.deadline, taskId: ctx.task.taskId };
    try {
      ctx.heartbeat();
    } catch (err) {
      seen.error = err;
    }
  }, '{}');
  assert.equal(seen.deadline, 1500);
  assert.equal(seen.taskId, 't');
  assert.ok(seen.error instanceof ToolkitError);
  assert.equal(seen.error.tag, 'task-closed');
  assert.equal(seen.error.detail, 'TaskTimedOut');
});

test('a test context counts heartbeats, keeps checkpoints and can be cancelled', () => {
  const ctx = Context.forTests({ input: { a: 1 }, deadline: 2000 });
  assert.equal(ctx.deadline, 2000);
  assert.equal(JSON.parse(ctx.task.input).a, 1);
  ctx.heartbeat();
  ctx.heartbeat();
  assert.equal(ctx.heartbeats, 2);
  assert.equal(ctx.lastCheckpoint(), undefined);
  ctx.checkpoint('step 3');
  assert.equal(ctx.lastCheckpoint(), 'step 3');
  assert.equal(ctx.cancelled(), false);
  ctx.cancel();
  assert.equal(ctx.cancelled(), true);
});

test('outside a component, handle() refuses to run and says what to do', () => {
  const handle = hostless(() => 1);
  assert.throws(() => handle(task('{}')), /Context\.forTests/);
});
