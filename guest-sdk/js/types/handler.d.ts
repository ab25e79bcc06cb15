/// <reference path="./interfaces/sfn-activity-toolkit.d.ts" />
/// <reference path="./interfaces/sfn-activity-types.d.ts" />
declare module 'sfn:activity/handler@0.2.0' {
  export type Task = import('sfn:activity/types@0.2.0').Task;
  export type * as SfnActivityToolkit020 from 'sfn:activity/toolkit@0.2.0'; // import sfn:activity/toolkit@0.2.0
  export type * as SfnActivityTypes020 from 'sfn:activity/types@0.2.0'; // import sfn:activity/types@0.2.0
  /**
  * Handles one task. Answer it through the toolkit before returning. Returning
  * `ok` without an answer fails the task with `SfnWasmHost.NoResponse`; returning
  * `err(message)` without an answer fails it with `SfnWasmHost.HandlerError` and the
  * message as the cause.
  */
  export function handle(task: Task): void;
}
