// Outside a component (Node.js: unit tests, tools): the SDK with no host. `handler(fn)`
// still returns the `handle` export, which refuses to run here; test `fn` itself with
// `Context.forTests()`.
import { bind } from './core.js';

export { Context, TaskFailure, ToolkitError, INVALID_INPUT, HANDLER_ERROR } from './core.js';
export const handler = bind(null);
