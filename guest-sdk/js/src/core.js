// The SDK itself, with no import of the host's toolkit: `component.js` binds it to the
// host (inside a component), `index.js` to nothing (Node.js, for unit tests). Both export
// the same names, so a handler's module runs in either.

/** The error name a task fails with when its input does not match what the handler takes. */
export const INVALID_INPUT = 'SfnWasmHost.InvalidInput';
/** The error name a task fails with when the handler throws anything but a TaskFailure. */
export const HANDLER_ERROR = 'SfnWasmHost.HandlerError';

/**
 * A task failure: Step Functions sees `error` as the error name (what `Catch` and
 * `Retry` match on) and `cause` as the details. Throw it from a handler.
 */
export class TaskFailure extends Error {
  constructor(error, cause = '') {
    super(`${error}: ${cause}`);
    this.name = 'TaskFailure';
    this.error = String(error);
    this.cause = String(cause);
  }
}

/**
 * A toolkit call the host did not do: `tag` is the WIT variant (`already-responded`,
 * `invalid-output`, `task-closed`, `unavailable`), `detail` its text.
 */
export class ToolkitError extends Error {
  constructor(tag, detail = '') {
    super(detail ? `${tag}: ${detail}` : tag);
    this.name = 'ToolkitError';
    this.tag = tag;
    this.detail = detail;
  }
}

// Calls a toolkit import; a WIT `err` (thrown by the bindings as an object whose
// `payload` is the variant) becomes a ToolkitError.
function call(f, ...args) {
  try {
    return f(...args);
  } catch (err) {
    const payload = err?.payload;
    if (payload?.tag) throw new ToolkitError(payload.tag, payload.val ?? '');
    throw err;
  }
}

// What a test context records instead of calling a host.
class TestToolkit {
  heartbeats = 0;
  cancelledFlag = false;
  saved = undefined;
  heartbeat() {
    this.heartbeats += 1;
  }
  cancelled() {
    return this.cancelledFlag;
  }
  checkpoint(data) {
    this.saved = String(data);
  }
  lastCheckpoint() {
    return this.saved;
  }
}

/** What a handler can see of its task and do besides answering it. */
export class Context {
  #task;
  #toolkit;

  constructor(task, toolkit) {
    this.#task = task;
    this.#toolkit = toolkit;
  }

  /**
   * A context for unit tests of a handler's logic, without a host: heartbeats are
   * counted (`heartbeats`), checkpoints kept in memory, `cancel()` turns `cancelled()` true.
   */
  static forTests({ input = {}, deadline } = {}) {
    const task = {
      input: JSON.stringify(input),
      activityArn: 'arn:aws:states:us-east-1:000000000000:activity:test',
      workerName: 'test:0',
      taskId: 'test',
      deadlineMs: deadline === undefined ? undefined : BigInt(deadline),
    };
    return new Context(task, new TestToolkit());
  }

  /** The task: `input` (raw JSON text), `activityArn`, `workerName`, `taskId`. */
  get task() {
    return this.#task;
  }

  /** Milliseconds left before the host aborts the handler (when the task started), or undefined. */
  get deadline() {
    const ms = this.#task.deadlineMs;
    return ms === undefined ? undefined : Number(ms);
  }

  /** Tells Step Functions the handler is still working; throws ToolkitError (`task-closed`: stop). */
  heartbeat() {
    call(() => this.#toolkit.heartbeat());
  }

  /** True once the host wants the handler to stop early (it is shutting down). */
  cancelled() {
    return this.#toolkit.cancelled();
  }

  /** Saves `data` (a string) as the task's progress, for a later attempt; throws ToolkitError. */
  checkpoint(data) {
    call(() => this.#toolkit.checkpoint(String(data)));
  }

  /** The last checkpoint saved for this task's work, or undefined. */
  lastCheckpoint() {
    return this.#toolkit.lastCheckpoint() ?? undefined;
  }

  /** Heartbeats sent through a `forTests` context. */
  get heartbeats() {
    return this.#toolkit instanceof TestToolkit ? this.#toolkit.heartbeats : 0;
  }

  /** Makes `cancelled()` true on a `forTests` context, as a host shutting down would. */
  cancel() {
    if (this.#toolkit instanceof TestToolkit) this.#toolkit.cancelledFlag = true;
  }
}

// The cause for anything a handler threw: an Error's name, message and stack (the stack
// of SpiderMonkey, the engine in the component, names frames but not the message).
export function describe(thrown) {
  if (thrown instanceof Error) {
    const head = `${thrown.name}: ${thrown.message}`;
    return thrown.stack ? `${head}\n${thrown.stack}` : head;
  }
  try {
    return typeof thrown === 'string' ? thrown : JSON.stringify(thrown) ?? String(thrown);
  } catch {
    return String(thrown);
  }
}

/**
 * Binds the SDK to a toolkit (the host's imports, or null outside a component) and
 * returns `handler`.
 */
export function bind(toolkit) {
  // Sends one answer; an answer the host refuses for its shape (invalid-output) becomes
  // a failure saying so, any other refusal is the host's to report.
  function answer(send) {
    try {
      call(send);
    } catch (err) {
      if (err instanceof ToolkitError && err.tag === 'invalid-output') {
        answer(() => toolkit.failure(HANDLER_ERROR, `the handler's output was refused: ${err.detail}`));
      } else {
        console.error(`sfn-wasm-guest: the answer was not accepted: ${describe(err)}`);
      }
    }
  }

  /**
   * Makes the component's `handle` export from `fn(input, ctx) => output` (or a promise
   * of it): `input` is the parsed task input, the returned value answers `success`, a
   * thrown TaskFailure `failure(error, cause)`, anything else thrown
   * `failure('SfnWasmHost.HandlerError', name, message and stack)`.
   */
  return function handler(fn) {
    if (typeof fn !== 'function') throw new TypeError('handler() takes a function (input, ctx) => output');
    return function handle(task) {
      if (!toolkit) {
        throw new Error('handle() runs inside a component; test your function with Context.forTests()');
      }
      let input;
      try {
        input = JSON.parse(task.input);
      } catch (err) {
        answer(() => toolkit.failure(INVALID_INPUT, `the task input is not JSON: ${err.message}`));
        return;
      }
      const ctx = new Context(task, toolkit);
      // The promise settles in the microtasks the engine runs before `handle`'s call
      // returns to the host, so the answer is inside the call.
      Promise.resolve()
        .then(() => fn(input, ctx))
        .then(
          (output) => {
            let json;
            try {
              json = JSON.stringify(output ?? null);
            } catch (err) {
              answer(() => toolkit.failure(HANDLER_ERROR, `the handler's output is not JSON: ${describe(err)}`));
              return;
            }
            answer(() => toolkit.success(json));
          },
          (thrown) => {
            if (thrown instanceof TaskFailure) {
              answer(() => toolkit.failure(thrown.error, thrown.cause));
            } else {
              answer(() => toolkit.failure(HANDLER_ERROR, describe(thrown)));
            }
          },
        );
    };
  };
}
