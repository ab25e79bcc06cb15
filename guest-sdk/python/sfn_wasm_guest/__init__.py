"""Write AWS Step Functions activity handlers for sfn-wasm-host in Python.

A handler is a function of the parsed task input::

    from sfn_wasm_guest import Context, TaskFailure, handler

    @handler
    def handle(input: dict, ctx: Context) -> dict:
        if not input.get("hello"):
            raise TaskFailure("InvalidName", "hello must not be empty")
        return {"greeting": f"Hello, {input['hello']}"}

The returned value answers ``success`` (as JSON); ``raise TaskFailure(error, cause)``
answers ``failure(error, cause)``; any other exception answers
``failure("SfnWasmHost.HandlerError", type, message and traceback)``. Build the component
with ``python3 -m sfn_wasm_guest build``. ``@handler`` returns the function unchanged, so
tests call it directly with ``Context.for_tests()``.
"""

from __future__ import annotations

import datetime
import json
import traceback
from typing import Any, Callable, Optional

__all__ = [
    "Context",
    "HANDLER_ERROR",
    "INVALID_INPUT",
    "TaskFailure",
    "ToolkitError",
    "handler",
]

#: The error name a task fails with when its input does not match what the handler takes.
INVALID_INPUT = "SfnWasmHost.InvalidInput"
#: The error name a task fails with when the handler raises anything but a TaskFailure.
HANDLER_ERROR = "SfnWasmHost.HandlerError"

# The attribute `@handler` marks a function with; the build finds the handler by it.
_MARK = "__sfn_wasm_handler__"


class TaskFailure(Exception):
    """A task failure: Step Functions sees ``error`` as the error name (what ``Catch``
    and ``Retry`` match on) and ``cause`` as the details. Raise it from a handler."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = str(error)
        self.cause = str(cause)


class ToolkitError(Exception):
    """A toolkit call the host did not do: ``tag`` is the WIT variant
    (``already-responded``, ``invalid-output``, ``task-closed``, ``unavailable``),
    ``detail`` its text."""

    def __init__(self, tag: str, detail: str = "") -> None:
        super().__init__(f"{tag}: {detail}" if detail else tag)
        self.tag = tag
        self.detail = detail


class TestTask:
    """The task a test context shows: the fields of the WIT ``task`` record."""

    def __init__(self, input: str, deadline_ms: Optional[int]) -> None:
        self.input = input
        self.activity_arn = "arn:aws:states:us-east-1:000000000000:activity:test"
        self.worker_name = "test:0"
        self.task_id = "test"
        self.deadline_ms = deadline_ms


class _TestToolkit:
    """What a test context records instead of calling a host."""

    def __init__(self) -> None:
        self.heartbeats = 0
        self.cancelled_flag = False
        self.saved: Optional[str] = None

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def cancelled(self) -> bool:
        return self.cancelled_flag

    def checkpoint(self, data: str) -> None:
        self.saved = data

    def last_checkpoint(self) -> Optional[str]:
        return self.saved


def _tag(variant: Any) -> str:
    # componentize-py names a variant's cases ToolkitError_TaskClosed, ...
    name = type(variant).__name__.split("_", 1)[-1]
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _call(f: Callable[..., Any], *args: Any) -> Any:
    """Calls a toolkit import; a WIT ``err`` (raised by the bindings as ``Err(value)``)
    becomes a ToolkitError."""
    try:
        return f(*args)
    except ToolkitError:
        raise
    except Exception as err:
        value = getattr(err, "value", None)
        if value is not None and type(err).__name__ == "Err":
            raise ToolkitError(_tag(value), str(getattr(value, "value", "") or "")) from None
        raise


class Context:
    """What a handler can see of its task and do besides answering it."""

    def __init__(self, task: Any, toolkit: Any) -> None:
        self._task = task
        self._toolkit = toolkit

    @classmethod
    def for_tests(cls, input: Any = None, deadline: Optional[datetime.timedelta] = None) -> "Context":
        """A context for unit tests of a handler's logic, without a host: heartbeats
        are counted (``heartbeats``), checkpoints kept in memory, ``cancel()`` turns
        ``cancelled()`` true."""
        ms = None if deadline is None else int(deadline.total_seconds() * 1000)
        return cls(TestTask(json.dumps({} if input is None else input), ms), _TestToolkit())

    @property
    def task(self) -> Any:
        """The task: ``input`` (raw JSON text), ``activity_arn``, ``worker_name``, ``task_id``."""
        return self._task

    @property
    def deadline(self) -> Optional[datetime.timedelta]:
        """Time left before the host aborts the handler (when the task started), or None."""
        ms = self._task.deadline_ms
        return None if ms is None else datetime.timedelta(milliseconds=ms)

    def heartbeat(self) -> None:
        """Tells Step Functions the handler is still working. Raises ToolkitError
        (``task-closed``: stop working on it)."""
        _call(self._toolkit.heartbeat)

    def cancelled(self) -> bool:
        """True once the host wants the handler to stop early (it is shutting down)."""
        return bool(self._toolkit.cancelled())

    def checkpoint(self, data: str) -> None:
        """Saves ``data`` as the task's progress, for a later attempt. Raises ToolkitError."""
        _call(self._toolkit.checkpoint, str(data))

    def last_checkpoint(self) -> Optional[str]:
        """The last checkpoint saved for this task's work, or None."""
        return self._toolkit.last_checkpoint()

    @property
    def heartbeats(self) -> int:
        """Heartbeats sent through a ``for_tests`` context."""
        return self._toolkit.heartbeats if isinstance(self._toolkit, _TestToolkit) else 0

    def cancel(self) -> None:
        """Makes ``cancelled()`` true on a ``for_tests`` context."""
        if isinstance(self._toolkit, _TestToolkit):
            self._toolkit.cancelled_flag = True


Handler = Callable[[Any, Context], Any]


def handler(fn: Handler) -> Handler:
    """Marks ``fn(input, ctx) -> output`` as the component's handler (one per component)
    and returns it unchanged."""
    if not callable(fn):
        raise TypeError("@handler decorates a function (input, ctx) -> output")
    setattr(fn, _MARK, True)
    return fn


def describe(exc: BaseException) -> str:
    """The cause for an exception a handler raised: its type, message and traceback."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def run(fn: Handler, task: Any, toolkit: Any) -> None:
    """Runs ``fn`` for one task and answers it through ``toolkit`` (the host's imports)."""

    def answer(send: Callable[..., Any], *args: Any) -> None:
        try:
            _call(send, *args)
        except ToolkitError as err:
            if err.tag == "invalid-output":
                answer(toolkit.failure, HANDLER_ERROR, f"the handler's output was refused: {err.detail}")
            else:
                print(f"sfn-wasm-guest: the answer was not accepted: {err}")

    try:
        data = json.loads(task.input)
    except ValueError as err:
        answer(toolkit.failure, INVALID_INPUT, f"the task input is not JSON: {err}")
        return
    try:
        output = fn(data, Context(task, toolkit))
    except TaskFailure as failure:
        answer(toolkit.failure, failure.error, failure.cause)
        return
    except Exception as exc:  # noqa: BLE001 - every other exception is the task's failure
        answer(toolkit.failure, HANDLER_ERROR, describe(exc))
        return
    try:
        text = json.dumps(output)
    except (TypeError, ValueError) as err:
        answer(toolkit.failure, HANDLER_ERROR, f"the handler's output is not JSON: {err}")
        return
    answer(toolkit.success, text)


def find_handler(module: Any) -> Handler:
    """The one ``@handler`` function of ``module``; ValueError when there is none or more."""
    found = [value for value in vars(module).values() if callable(value) and getattr(value, _MARK, False)]
    if len(found) != 1:
        what = "no function" if not found else f"{len(found)} functions"
        raise ValueError(
            f"{module.__name__}: {what} marked @handler; mark exactly one (from sfn_wasm_guest import handler)"
        )
    return found[0]
