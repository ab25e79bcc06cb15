"""Runs LocalStack (`python -m localstack.runtime.main`) with fixes for two races in its
Step Functions activities, which lose a task before any worker sees it.

LocalStack 4.9.2 (the pinned `localstack-core`) hands an activity task to a worker in two
steps that are not atomic, where AWS's `GetActivityTask` is:

1. `CallbackPoolManager.add_activity_task` queues the task on the activity *before* it
   registers the task's callback endpoint. A `GetActivityTask` that takes the task in between
   finds no endpoint, fails with `InvalidToken`, and the task is gone from the queue.
2. `StartExecution` puts the execution in the store before it gives it an `exec_worker`,
   and that worker makes its `env` later, on its own thread. A `GetActivityTask` that takes
   another execution's task meanwhile walks every execution, trips on the `None` worker or
   `env` (`AttributeError`, an `InternalError` to the caller), and that task is gone too.

Either way the execution waits out its state's `TimeoutSeconds` for a start that never comes,
then fails with `States.Runtime` ("'ActivityTaskStartEndpoint' object has no attribute
'_outcome'", a third defect: the start's outcome is unset when its wait times out). A test
that starts many executions at once while four workers poll meets this now and then; the host
never saw the task, so no host behaviour is under test there.

The fixes: register the endpoint before queueing the task; pass over executions whose worker
or `env` is not made yet (none of their tasks can be queued before); a start wait that times
out yields no outcome, so the state fails with `States.Timeout` as on AWS. They are applied
only to the version they were written against: another version stops here, so that the fixes
are looked at again rather than silently kept or dropped.
"""

import importlib.metadata
import runpy
import sys

PINNED = "4.9.2"


def _apply_fixes():
    version = importlib.metadata.version("localstack-core")
    if version != PINNED:
        sys.exit(
            f"scripts/lib/localstack_main.py: its fixes are written for localstack-core {PINNED}, "
            f"this venv has {version}; check whether the races it names are fixed there, then "
            "update or drop the fixes and PINNED"
        )

    from localstack.services.stepfunctions.asl.eval.callback import callback
    from localstack.services.stepfunctions.backend.activity import ActivityTask
    from localstack.services.stepfunctions.provider import StepFunctionsProvider

    def add_activity_task(self, callback_id, activity_arn, activity_input):
        if callback_id in self._pool:
            raise ValueError("Duplicate callback token id value.")
        activity = self._activity_store.get(activity_arn)
        if activity is None:
            raise callback.ActivityDoesNotExist()
        endpoint = callback.ActivityCallbackEndpoint(
            callback_id=callback_id, activity_input=activity_input
        )
        # Registered first: a worker may take the task the moment it is queued.
        self._pool[callback_id] = endpoint
        activity.add_task(ActivityTask(task_token=callback_id, task_input=activity_input))
        return endpoint

    callback.CallbackPoolManager.add_activity_task = add_activity_task

    get_executions = StepFunctionsProvider._get_executions

    def started_executions(self, *args, **kwargs):
        return [
            e
            for e in get_executions(self, *args, **kwargs)
            if e.exec_worker is not None and e.exec_worker.env is not None
        ]

    StepFunctionsProvider._get_executions = started_executions

    callback.ActivityTaskStartEndpoint._outcome = None


if __name__ == "__main__":
    _apply_fixes()
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
