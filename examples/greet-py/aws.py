"""Reads an S3 object and sends it as an SQS message, with no credentials of its own:
{"bucket": "...", "key": "...", "queue_url": "...", "region": "us-east-1"} ->
{"bytes": 42, "message_id": "..."}. The activity grants `[activity.aws] services =
["s3", "sqs"]`; the host signs both requests.
"""

import json

import aws_client
import http_client
import wit_world
from wit_world.imports import toolkit


class WitWorld(wit_world.WitWorld):
    def handle(self, task):
        request = json.loads(task.input)
        region = request.get("region", "us-east-1")
        try:
            body = aws_client.s3_get_object(region, request["bucket"], request["key"])
            message_id = aws_client.sqs_send_message(
                region, request["queue_url"], body.decode("utf-8", "replace")
            )
        except aws_client.AwsError as err:
            toolkit.failure(err.code, err.message)
            return
        except http_client.HttpError as err:
            toolkit.failure(err.name, str(err))
            return
        toolkit.success(json.dumps({"bytes": len(body), "message_id": message_id}))
