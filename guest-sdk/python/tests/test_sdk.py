"""The SDK's wrapper against a recording toolkit: what each kind of handler result answers."""

import datetime
import sys
import types
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sfn_wasm_guest import Context, TaskFailure, ToolkitError, find_handler, handler, run  # noqa: E402


class Err(Exception):
    """What componentize-py's bindings raise for a WIT err."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


class ToolkitError_TaskClosed:  # noqa: N801 - componentize-py's naming
    def __init__(self, value):
        self.value = value


class Recorder:
    def __init__(self):
        self.calls = []

    def success(self, output):
        self.calls.append(("success", output))

    def failure(self, error, cause):
        self.calls.append(("failure", error, cause))

    def heartbeat(self):
        raise Err(ToolkitError_TaskClosed("TaskTimedOut"))

    def cancelled(self):
        return False

    def checkpoint(self, data):
        pass

    def last_checkpoint(self):
        return None


def task(text):
    return types.SimpleNamespace(input=text, activity_arn="arn", worker_name="w:1", task_id="t", deadline_ms=1500)


def answers(fn, text):
    toolkit = Recorder()
    run(fn, task(text), toolkit)
    return toolkit.calls


class Answers(unittest.TestCase):
    def test_a_returned_value_answers_success_with_its_json(self):
        self.assertEqual(answers(lambda i, c: {"greeting": f"Hello, {i['hello']}"}, '{"hello": "X"}'),
                         [("success", '{"greeting": "Hello, X"}')])

    def test_a_task_failure_answers_failure_with_its_name_and_cause(self):
        def fn(i, c):
            raise TaskFailure("InvalidName", "hello must not be empty")

        self.assertEqual(answers(fn, "{}"), [("failure", "InvalidName", "hello must not be empty")])

    def test_any_other_exception_answers_handler_error_with_type_message_traceback(self):
        def fn(i, c):
            raise KeyError("hello")

        [(kind, error, cause)] = answers(fn, "{}")
        self.assertEqual((kind, error), ("failure", "SfnWasmHost.HandlerError"))
        self.assertTrue(cause.startswith("Traceback (most recent call last):"), cause)
        self.assertIn("test_sdk.py", cause)
        self.assertTrue(cause.endswith("KeyError: 'hello'"), cause)

    def test_an_input_that_is_not_json_answers_invalid_input(self):
        called = []
        [(_, error, cause)] = answers(lambda i, c: called.append(i), '{"hello":')
        self.assertEqual(called, [])
        self.assertEqual(error, "SfnWasmHost.InvalidInput")
        self.assertTrue(cause.startswith("the task input is not JSON: "), cause)

    def test_an_output_that_is_not_json_answers_handler_error(self):
        [(_, error, cause)] = answers(lambda i, c: {"when": datetime.date(2026, 1, 1)}, "{}")
        self.assertEqual(error, "SfnWasmHost.HandlerError")
        self.assertIn("output is not JSON", cause)

    def test_the_context_gives_the_deadline_and_turns_toolkit_errors_into_toolkit_error(self):
        seen = {}

        def fn(i, ctx):
            seen["deadline"] = ctx.deadline
            try:
                ctx.heartbeat()
            except ToolkitError as err:
                seen["error"] = (err.tag, err.detail)
            return None

        self.assertEqual(answers(fn, "{}"), [("success", "null")])
        self.assertEqual(seen, {"deadline": datetime.timedelta(milliseconds=1500), "error": ("task-closed", "TaskTimedOut")})


class TestContext(unittest.TestCase):
    def test_counts_heartbeats_keeps_checkpoints_and_cancels(self):
        ctx = Context.for_tests({"a": 1}, deadline=datetime.timedelta(seconds=2))
        self.assertEqual(ctx.deadline, datetime.timedelta(seconds=2))
        ctx.heartbeat()
        ctx.heartbeat()
        self.assertEqual(ctx.heartbeats, 2)
        self.assertIsNone(ctx.last_checkpoint())
        ctx.checkpoint("step 3")
        self.assertEqual(ctx.last_checkpoint(), "step 3")
        self.assertFalse(ctx.cancelled())
        ctx.cancel()
        self.assertTrue(ctx.cancelled())


class FindHandler(unittest.TestCase):
    def test_exactly_one_marked_function(self):
        module = types.ModuleType("handler")

        @handler
        def handle(i, c):
            return i

        module.handle = handle
        module.other = lambda: None
        self.assertIs(find_handler(module), handle)
        self.assertEqual(handle({"x": 1}, None), {"x": 1}, "@handler returns the function unchanged")
        with self.assertRaisesRegex(ValueError, "no function marked @handler"):
            find_handler(types.ModuleType("empty"))


if __name__ == "__main__":
    unittest.main()
