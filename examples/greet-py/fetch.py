"""Calls an HTTP API and answers with what it got: {"url": "..."} -> {"status": 200, "body": "..."}.

A refused or failed request fails the task with the wasi:http error the handler saw
(`HTTP-request-denied`, `connection-timeout`, ...).
"""

import json

import http_client
import wit_world
from wit_world.imports import toolkit


class WitWorld(wit_world.WitWorld):
    def handle(self, task):
        url = json.loads(task.input)["url"]
        try:
            status, body = http_client.get(url)
        except http_client.HttpError as err:
            toolkit.failure(err.name, str(err))
            return
        toolkit.success(json.dumps({"status": status, "body": body.decode("utf-8", "replace")}))
