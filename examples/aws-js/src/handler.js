// Reads an S3 object and sends it as an SQS message with the AWS SDK for JavaScript v3,
// holding no credential: {"bucket": "...", "key": "...", "queue_url": "...", "region":
// "us-east-1"} -> {"bytes": 42, "message_id": "..."}. The activity grants
// `[activity.aws] services = ["s3", "sqs"]`; the host signs both requests. AWS's errors
// fail the task with AWS's code (`NoSuchKey`), a request the grant does not cover with
// `HTTP-request-denied`.
import { handler } from 'sfn-wasm-guest';
import { awsConfig, awsFailure } from 'sfn-wasm-guest/aws';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';

export const handle = handler(async (input) => {
  const config = awsConfig({ region: input.region ?? 'us-east-1' });
  try {
    const object = await new S3Client(config).send(new GetObjectCommand({ Bucket: input.bucket, Key: input.key }));
    const body = await object.Body.transformToByteArray();
    const sent = await new SQSClient(config).send(
      new SendMessageCommand({ QueueUrl: input.queue_url, MessageBody: new TextDecoder().decode(body) }),
    );
    return { bytes: body.length, message_id: sent.MessageId };
  } catch (err) {
    throw awsFailure(err);
  }
});
