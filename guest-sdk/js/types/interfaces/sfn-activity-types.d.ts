declare module 'sfn:activity/types@0.2.0' {
  /**
   * One activity task, as the handler sees it.
   */
  export interface Task {
    /**
     * The task input, a JSON document (the host has checked that it parses).
     */
    input: string,
    /**
     * The ARN of the activity this task was polled from.
     */
    activityArn: string,
    /**
     * The name of the worker that polled the task (`PREFIX:RANDOM`).
     */
    workerName: string,
    /**
     * A short, stable id for logs; never the task token, which stays in the host.
     */
    taskId: string,
    /**
     * Milliseconds left before the host aborts the handler, if it has a deadline.
     */
    deadlineMs?: bigint,
  }
  /**
   * Why a toolkit call did not do what was asked.
   */
  export type ToolkitError = ToolkitErrorAlreadyResponded | ToolkitErrorInvalidOutput | ToolkitErrorTaskClosed | ToolkitErrorUnavailable;
  /**
   * `success` or `failure` was already sent for this task; the first answer stands.
   */
  export interface ToolkitErrorAlreadyResponded {
    tag: 'already-responded',
  }
  /**
   * The output is not a JSON document, or is over 262,144 bytes; nothing was sent.
   */
  export interface ToolkitErrorInvalidOutput {
    tag: 'invalid-output',
    val: string,
  }
  /**
   * Step Functions no longer accepts answers for this task (it timed out or was
   * closed); the text says what Step Functions answered.
   */
  export interface ToolkitErrorTaskClosed {
    tag: 'task-closed',
    val: string,
  }
  /**
   * The call failed for another reason: for an answer, Step Functions refused it
   * outright (network errors and throttling are retried by the host, not reported);
   * for a heartbeat, it could not be sent this time.
   */
  export interface ToolkitErrorUnavailable {
    tag: 'unavailable',
    val: string,
  }
}
