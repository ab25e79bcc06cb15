/// <reference path="./sfn-activity-types.d.ts" />
declare module 'sfn:activity/toolkit@0.2.0' {
  /**
   * Completes the task successfully with `output`, a JSON document of at most
   * 262,144 bytes. Returns `ok` once the answer is delivered or the host has taken it
   * over (it retries through outages); from then on the answer stands, whatever the
   * handler does next.
   */
  export function success(output: string): void;
  /**
   * Fails the task with an error name (cut to 256 characters) and a cause (cut to
   * 32,768 characters); Step Functions can catch and retry on the error name.
   */
  export function failure(error: string, cause: string): void;
  /**
   * Tells Step Functions the handler is still working, so a `HeartbeatSeconds` timeout
   * does not fire. Calls are coalesced: at most one a second reaches Step Functions,
   * the others return `ok` at once.
   */
  export function heartbeat(): void;
  /**
   * True once the host wants the handler to stop early: the host is shutting down (a
   * handler that checks it can answer by itself before the host aborts it and answers
   * with `SfnWasmHost.Shutdown`), or Step Functions closed the task (nothing can be
   * answered any more; the handler is aborted after the activity's grace).
   */
  export function cancelled(): boolean;
  /**
   * Saves `data` (at most 262,144 bytes) as this task's progress under the activity's
   * progress key; a later attempt of the same work reads it with `last-checkpoint`.
   * `unavailable("no progress key")` when the activity keeps no progress
   * (`[activity.progress]`) or the task input lacks the key; `unavailable(...)` when the
   * store could not be written (the previous checkpoint stands); `invalid-output` when
   * `data` is too long.
   */
  export function checkpoint(data: string): void;
  /**
   * The last checkpoint saved under this task's progress key, if any: by this attempt,
   * or by an earlier attempt of the same work (a `Retry`, or a task a stopped host left).
   * None when there is none, no progress key, or the store cannot be read.
   */
  export function lastCheckpoint(): string | undefined;
  export type ToolkitError = import('sfn:activity/types@0.2.0').ToolkitError;
}
