// @ts-check
// {{name}}: an AWS Step Functions activity handler for sfn-wasm-host that calls AWS with
// the AWS SDK for JavaScript v3, as any Node.js code would, and holds no credential.
//
// `awsConfig` gives every client the region, placeholder credentials and this SDK's
// request handler (wasi:http): the SDK signs with the placeholders, and the host signs
// again with its own credentials, for the services and regions `[activity.aws]` in
// config.toml grants (here S3 and SQS); any other request fails with
// `HTTP-request-denied`. A thrown TaskFailure fails the task with its name.
import { handler } from 'sfn-wasm-guest';
import { awsConfig, awsFailure } from 'sfn-wasm-guest/aws';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';

/**
 * Reads `s3://bucket/key` as it streams in, writes a receipt object beside it
 * (`receipts/KEY.json`) and sends the receipt to `queue_url`: `{bytes, receipt_key,
 * message_id}`. AWS's errors fail the task with AWS's code (`NoSuchKey`,
 * `QueueDoesNotExist`), which a state machine can Catch.
 * @param {{ bucket: string, key: string, queue_url: string, region?: string }} input
 * @param {import('sfn-wasm-guest').Context} ctx
 * @returns {Promise<{ bytes: number, receipt_key: string, message_id: string | undefined }>}
 */
export async function copyToQueue(input, ctx) {
  const config = awsConfig({ region: input.region ?? 'us-east-1' });
  const s3 = new S3Client(config);
  const sqs = new SQSClient(config);
  try {
    const object = await s3.send(new GetObjectCommand({ Bucket: input.bucket, Key: input.key }));
    // The body streams: count it chunk by chunk instead of holding it whole.
    let bytes = 0;
    const reader = /** @type {ReadableStream<Uint8Array>} */ (object.Body?.transformToWebStream()).getReader();
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      bytes += chunk.value.length;
    }
    ctx.heartbeat();
    const receipt = JSON.stringify({ bucket: input.bucket, key: input.key, bytes });
    const receiptKey = `receipts/${input.key}.json`;
    // The SDK adds its default checksum (CRC32); S3 checks it against the bytes.
    await s3.send(
      new PutObjectCommand({ Bucket: input.bucket, Key: receiptKey, Body: receipt, ContentType: 'application/json' }),
    );
    const sent = await sqs.send(new SendMessageCommand({ QueueUrl: input.queue_url, MessageBody: receipt }));
    return { bytes, receipt_key: receiptKey, message_id: sent.MessageId };
  } catch (err) {
    throw awsFailure(err);
  }
}

// The component's export.
export const handle = handler(copyToQueue);
