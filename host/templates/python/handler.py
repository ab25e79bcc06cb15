"""{{name}}: an AWS Step Functions activity handler for sfn-wasm-host.

``greet`` takes the parsed task input and returns the output (answered as JSON);
``raise TaskFailure(...)`` fails the task with its name, which a state machine can
Catch; any other exception fails it with SfnWasmHost.HandlerError, its type, message and
traceback.
"""

from typing import TypedDict

from sfn_wasm_guest import Context, TaskFailure, handler


class Input(TypedDict):
    hello: str


class Output(TypedDict):
    greeting: str


@handler
def greet(input: Input, ctx: Context) -> Output:
    """Greets ``input["hello"]``; an empty name fails the task with ``InvalidName``."""
    if not input.get("hello"):
        raise TaskFailure("InvalidName", "hello must not be empty")
    # A long handler heartbeats between steps, so that HeartbeatSeconds does not fire.
    ctx.heartbeat()
    return {"greeting": f"Hello, {input['hello']}"}
