// Inside a component: the SDK bound to the host's toolkit. `sfn-wasm-guest build` picks
// this file through the package's `sfn-wasm-component` export condition.
import * as toolkit from 'sfn:activity/toolkit@0.2.0';
import { bind } from './core.js';

export { Context, TaskFailure, ToolkitError, INVALID_INPUT, HANDLER_ERROR } from './core.js';
export const handler = bind(toolkit);
