"""AWS requests for Python handlers, signed by the host (`[activity.aws]`).

The handler sends plain requests to `https://SERVICE.REGION.amazonaws.com`; the host
signs each with its own credentials (or the activity's role) and sends it, to `[aws]
endpoint_url` when one is set. The handler holds no credential. An error reply raises
`AwsError` whose `code` is AWS's (`NoSuchKey`); a failed request raises
`http_client.HttpError` (`HTTP-request-denied` when the service or region is not granted).
"""

import json
import re
from urllib.parse import quote

import http_client


class AwsError(Exception):
    """AWS answered with an error: `code` (`NoSuchKey`), `status`, the message."""

    def __init__(self, status, code, message):
        self.status, self.code = status, code
        super().__init__(f"{code} ({status}): {message}")
        self.message = message


def endpoint(service, region):
    return f"https://{service}.{region}.amazonaws.com"


def send(service, region, method, path, headers=None, body=b""):
    """Sends `method path` to the service's endpoint; returns (headers, body) on success."""
    status, reply_headers, reply = http_client.request(
        method, endpoint(service, region) + path, headers, body
    )
    if 200 <= status < 300:
        return reply_headers, reply
    raise _service_error(status, reply_headers, reply)


def s3_get_object(region, bucket, key):
    """S3 GetObject: the object's bytes."""
    return send("s3", region, "GET", f"/{quote(bucket, safe='')}/{quote(key)}")[1]


def sqs_send_message(region, queue_url, body):
    """SQS SendMessage (JSON protocol): the message id."""
    _, reply = send(
        "sqs", region, "POST", "/",
        {"x-amz-target": "AmazonSQS.SendMessage", "content-type": "application/x-amz-json-1.0"},
        json.dumps({"QueueUrl": queue_url, "MessageBody": body}),
    )
    return json.loads(reply).get("MessageId", "")


def _service_error(status, headers, body):
    text = body.decode("utf-8", "replace")
    code = (headers.get("x-amzn-query-error") or "").split(";")[0] or None
    message = ""
    try:
        reply = json.loads(text)
        code = code or (reply.get("__type") or reply.get("code") or "").split("#")[-1] or None
        message = reply.get("message") or reply.get("Message") or ""
    except ValueError:
        found = re.search(r"<Code>(.*?)</Code>", text)
        code = code or (found.group(1) if found else None)
        found = re.search(r"<Message>(.*?)</Message>", text)
        message = found.group(1) if found else ""
    return AwsError(status, code or f"HTTP-{status}", message)
