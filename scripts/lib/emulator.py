"""What the demo and the bench scripts need from the emulator: an activity and a state
machine with one task state on it."""

import json
import uuid


def activity_and_machine(sfn, name, task_state):
    """Creates a fresh activity `NAME-RANDOM` and a state machine whose one state is
    `task_state` (a Task state's fields, without `Type`, `Resource` and `End`) on it.
    Returns (activity ARN, state machine ARN)."""
    suffix = uuid.uuid4().hex[:8]
    activity = sfn.create_activity(name=f"{name}-{suffix}")["activityArn"]
    state = {"Type": "Task", "Resource": activity, **task_state, "End": True}
    definition = {"StartAt": "Work", "States": {"Work": state}}
    machine = sfn.create_state_machine(
        name=f"{name}-{suffix}", definition=json.dumps(definition),
        roleArn="arn:aws:iam::000000000000:role/sfn-wasm-host-scripts",
    )["stateMachineArn"]
    return activity, machine
