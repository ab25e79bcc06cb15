"""The scenarios handler in Python: the input's "hello" picks a behaviour, as in
examples/scenarios (Rust)."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import toolkit
from wit_world.imports.types import ToolkitError_AlreadyResponded


class WitWorld(wit_world.WitWorld):
    def handle(self, task):
        hello = json.loads(task.input)["hello"]
        greeting = json.dumps({"greeting": f"Hello, {hello}"})
        if hello == "World":
            toolkit.success(greeting)
        elif hello == "Heartbeat":
            toolkit.heartbeat()
            toolkit.success(greeting)
        elif hello == "Failure":
            toolkit.failure("InvalidName", "Failure is not a valid name")
        elif hello == "Duplicate":
            toolkit.success(greeting)
            try:
                toolkit.failure("Duplicate", "a second answer")
            except Err as e:
                # The first answer stands; the second is refused.
                if not isinstance(e.value, ToolkitError_AlreadyResponded):
                    raise Err(f"unexpected: {e.value!r}")
        elif hello == "Refuse":
            raise Err("refused on purpose")
        elif hello == "Error":
            raise ValueError("the Error scenario raises on purpose")
        elif hello == "Loop":
            while True:
                pass
        else:
            toolkit.failure("UnknownScenario", f"no scenario named {hello!r}")
