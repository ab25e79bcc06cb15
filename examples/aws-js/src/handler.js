// Reads an S3 object and sends it as an SQS message with the AWS SDK for JavaScript v3,
// holding no credential: {"bucket": "...", "key": "...", "queue_url": "...", "region":
// "us-east-1", "copy_key": "..." (optional)} -> {"bytes": 42, "message_id": "..."}. With
// `copy_key` the object is also written back under that key from a Blob (a body the SDK
// checksums as a stream: it goes whole, its CRC32 a header S3 checks). The activity
// grants `[activity.aws] services = ["s3", "sqs"]`; the host signs every request. AWS's
// errors fail the task with AWS's code (`NoSuchKey`), a request the grant does not cover
// with `HTTP-request-denied`.
import { handler } from 'sfn-wasm-guest';
import { awsConfig, awsFailure } from 'sfn-wasm-guest/aws';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';

export const handle = handler(async (input) => {
  const config = awsConfig({ region: input.region ?? 'us-east-1' });
  const s3 = new S3Client(config);
  try {
    const object = await s3.send(new GetObjectCommand({ Bucket: input.bucket, Key: input.key }));
    const body = await object.Body.transformToByteArray();
    if (input.copy_key) {
      await s3.send(new PutObjectCommand({ Bucket: input.bucket, Key: input.copy_key, Body: new Blob([body]) }));
    }
    const sent = await new SQSClient(config).send(
      new SendMessageCommand({ QueueUrl: input.queue_url, MessageBody: new TextDecoder().decode(body) }),
    );
    return { bytes: body.length, message_id: sent.MessageId };
  } catch (err) {
    throw awsFailure(err);
  }
});
