// Reads an S3 object and sends it as an SQS message, with no credentials of its own:
// {"bucket": "...", "key": "...", "queue_url": "...", "region": "us-east-1"} ->
// {"bytes": 42, "message_id": "..."}. The activity grants `[activity.aws] services =
// ["s3", "sqs"]`; the host signs both requests.
import { success, failure } from 'sfn:activity/toolkit@0.2.0';
import { HttpError } from './http_client.js';
import { AwsError, s3GetObject, sqsSendMessage } from './aws_client.js';

export function handle(task) {
  const input = JSON.parse(task.input);
  const region = input.region ?? 'us-east-1';
  let body;
  let messageId;
  try {
    body = s3GetObject(region, input.bucket, input.key);
    messageId = sqsSendMessage(region, input.queue_url, new TextDecoder().decode(body));
  } catch (err) {
    if (err instanceof AwsError) {
      failure(err.code, err.awsMessage);
      return;
    }
    if (err instanceof HttpError) {
      failure(err.name, err.message);
      return;
    }
    throw err;
  }
  success(JSON.stringify({ bytes: body.length, message_id: messageId }));
}
