"""The greet handler in Python: {"hello": "X"} -> {"greeting": "Hello, X"}."""

import json

import wit_world
from wit_world.imports import toolkit


class WitWorld(wit_world.WitWorld):
    def handle(self, task):
        data = json.loads(task.input)
        toolkit.success(json.dumps({"greeting": f"Hello, {data['hello']}"}))
