// @ts-check
// {{name}}: an AWS Step Functions activity handler for sfn-wasm-host.
//
// `greet` takes the parsed task input and returns the output (answered as JSON); a thrown
// TaskFailure fails the task with its name, which a state machine can Catch; anything
// else thrown fails it with SfnWasmHost.HandlerError, its message and stack.
import { handler, TaskFailure } from 'sfn-wasm-guest';

/**
 * Greets `input.hello`; an empty name fails the task with `InvalidName`.
 * @param {{ hello: string }} input
 * @param {import('sfn-wasm-guest').Context} ctx
 * @returns {Promise<{ greeting: string }>}
 */
export async function greet(input, ctx) {
  if (!input.hello) {
    throw new TaskFailure('InvalidName', 'hello must not be empty');
  }
  // A long handler heartbeats between steps, so that HeartbeatSeconds does not fire.
  ctx.heartbeat();
  return { greeting: `Hello, ${input.hello}` };
}

// The component's export.
export const handle = handler(greet);
