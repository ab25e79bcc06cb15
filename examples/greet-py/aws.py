"""Reads an S3 object and sends it as an SQS message, with no credentials of its own:
{"bucket": "...", "key": "...", "queue_url": "...", "region": "us-east-1"} ->
{"bytes": 42, "message_id": "..."}. The activity grants `[activity.aws] services =
["s3", "sqs"]`; the host signs both requests.

The calls read as boto3's (`client("s3").get_object(Bucket=..., Key=...)`): the Python
SDK's `sfn_wasm_guest.aws` keeps botocore's names (boto3 itself does not run in
componentize-py).
"""

import json

import wit_world
from sfn_wasm_guest import aws
from sfn_wasm_guest.http import HttpError
from wit_world.imports import toolkit


class WitWorld(wit_world.WitWorld):
    def handle(self, task):
        request = json.loads(task.input)
        region = request.get("region", "us-east-1")
        try:
            s3 = aws.client("s3", region_name=region)
            body = s3.get_object(Bucket=request["bucket"], Key=request["key"])["Body"].read()
            sent = aws.client("sqs", region_name=region).send_message(
                QueueUrl=request["queue_url"], MessageBody=body.decode("utf-8", "replace")
            )
        except (aws.ClientError, HttpError) as err:
            failure = aws.failure(err)
            toolkit.failure(failure.error, failure.cause)
            return
        toolkit.success(json.dumps({"bytes": len(body), "message_id": sent.get("MessageId", "")}))
