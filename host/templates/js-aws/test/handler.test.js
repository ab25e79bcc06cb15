import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Context, TaskFailure } from 'sfn-wasm-guest';
import { stub } from 'sfn-wasm-guest/http';

import { copyToQueue } from '../src/handler.js';

const input = {
  bucket: 'my-bucket',
  key: 'in/hello.txt',
  queue_url: 'https://sqs.us-east-1.amazonaws.com/000000000000/my-queue',
};

// S3 and SQS acted out by a stub of the network: the real SDK clients run.
function aws(objects) {
  const sent = [];
  const unstub = stub((request) => {
    const url = new URL(request.url);
    if (url.hostname.startsWith('sqs.')) {
      const body = JSON.parse(new TextDecoder().decode(request.body));
      sent.push(body);
      const md5 = createHash('md5').update(body.MessageBody).digest('hex');
      return { status: 200, headers: { 'content-type': 'application/x-amz-json-1.0' }, body: JSON.stringify({ MessageId: 'm-1', MD5OfMessageBody: md5 }) };
    }
    // Virtual-hosted (BUCKET.s3.REGION.amazonaws.com/KEY), as the SDK addresses S3.
    const key = decodeURIComponent(url.pathname.slice(1));
    if (request.method === 'PUT') {
      objects[key] = new TextDecoder().decode(request.body);
      return { status: 200, headers: { etag: '"1"' } };
    }
    if (!(key in objects)) {
      return { status: 404, headers: { 'content-type': 'application/xml' }, body: '<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>' };
    }
    return { status: 200, body: objects[key] };
  });
  return { sent, unstub };
}

test('reads the object, writes a receipt and sends it', async () => {
  const objects = { 'in/hello.txt': 'hello, world' };
  const { sent, unstub } = aws(objects);
  try {
    const output = await copyToQueue(input, Context.forTests({ input }));
    assert.deepEqual(output, { bytes: 12, receipt_key: 'receipts/in/hello.txt.json', message_id: 'm-1' });
    const receipt = { bucket: 'my-bucket', key: 'in/hello.txt', bytes: 12 };
    assert.deepEqual(JSON.parse(objects['receipts/in/hello.txt.json']), receipt);
    assert.equal(sent.length, 1);
    assert.deepEqual(JSON.parse(sent[0].MessageBody), receipt);
  } finally {
    unstub();
  }
});

test("a missing object fails the task with AWS's code", async () => {
  const { unstub } = aws({});
  try {
    await assert.rejects(copyToQueue(input, Context.forTests({ input })), (err) => {
      assert.ok(err instanceof TaskFailure);
      assert.equal(err.error, 'NoSuchKey');
      return true;
    });
  } finally {
    unstub();
  }
});
