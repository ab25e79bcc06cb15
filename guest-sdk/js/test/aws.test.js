import { test } from 'node:test';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import assert from 'node:assert/strict';

import { TaskFailure } from '../src/index.js';
import { HttpError, stub } from '../src/http-node.js';
import { PLACEHOLDER_ACCESS_KEY, SfnWasmHttpHandler, awsConfig, awsFailure } from '../src/aws-node.js';
import { queryString } from '../src/aws-shared.js';
import { requestTarget } from '../src/http-shared.js';

test('awsConfig gives the region, placeholder credentials, the handler and one attempt', () => {
  const config = awsConfig({ region: 'eu-west-1' });
  assert.equal(config.region, 'eu-west-1');
  assert.equal(config.credentials.accessKeyId, PLACEHOLDER_ACCESS_KEY);
  assert.ok(config.requestHandler instanceof SfnWasmHttpHandler);
  assert.equal(config.maxAttempts, 1);
  assert.equal(config.useQueueUrlAsEndpoint, false);
  assert.equal(awsConfig({ region: 'us-east-1', maxAttempts: 3 }).maxAttempts, 3);
  assert.throws(() => awsConfig({}), TypeError);
});

test('a query is written as the SDK writes it', () => {
  assert.equal(queryString({ b: 'x y', a: ['1', '2'], flag: null, empty: '' }), 'a=1&a=2&b=x%20y&empty=&flag');
  assert.equal(queryString({ "k!'()*": 'v' }), 'k%21%27%28%29%2A=v');
});

test('the handler sends the request and streams the response body', async () => {
  const seen = [];
  const unstub = stub((request) => {
    seen.push(request);
    return { status: 200, headers: { 'x-amz-request-id': 'r1' }, body: 'payload' };
  });
  try {
    const { response } = await new SfnWasmHttpHandler().handle({
      method: 'PUT',
      protocol: 'https:',
      hostname: 'b.s3.us-east-1.amazonaws.com',
      path: '/k',
      query: { 'x-id': 'PutObject' },
      headers: { host: 'b.s3.us-east-1.amazonaws.com', 'content-type': 'text/plain' },
      body: 'hello',
    });
    assert.equal(seen[0].url, 'https://b.s3.us-east-1.amazonaws.com/k?x-id=PutObject');
    assert.equal(seen[0].headers.host, undefined);
    assert.equal(new TextDecoder().decode(seen[0].body), 'hello');
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers['x-amz-request-id'], 'r1');
    const text = await new Response(response.body).text();
    assert.equal(text, 'payload');
  } finally {
    unstub();
  }
});

test("awsFailure names AWS's code, or the wasi:http code", () => {
  const aws = Object.assign(new Error('The specified key does not exist.'), { name: 'NoSuchKey' });
  assert.deepEqual({ ...awsFailure(aws) }, { ...new TaskFailure('NoSuchKey', 'The specified key does not exist.') });
  assert.equal(awsFailure(new HttpError('HTTP-request-denied', 'sqs')).error, 'HTTP-request-denied');
  // A cause is never empty: without a detail, the error's message.
  assert.equal(awsFailure(new HttpError('DNS-error')).cause, 'DNS-error');
  const mine = new TaskFailure('Mine', 'kept');
  assert.equal(awsFailure(mine), mine);
});

// What the SDK's checksum step does with a Blob or stream body, given awsConfig's
// getAwsChunkedEncodingStream: the headers of aws-chunked framing, the body in its place.
function checksumStep(config, body) {
  class Sha256 {
    constructor() {
      this.hash = createHash('sha256');
    }
    update(bytes) {
      this.hash.update(bytes);
    }
    async digest() {
      return new Uint8Array(this.hash.digest());
    }
  }
  return {
    body: config.getAwsChunkedEncodingStream(body, {
      checksumAlgorithmFn: Sha256,
      checksumLocationName: 'x-amz-checksum-sha256',
      base64Encoder: (bytes) => Buffer.from(bytes).toString('base64'),
    }),
    headers: {
      'content-type': 'text/plain',
      'content-encoding': 'aws-chunked',
      'transfer-encoding': 'chunked',
      'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
      'x-amz-trailer': 'x-amz-checksum-sha256',
      'x-amz-sdk-checksum-algorithm': 'SHA256',
    },
  };
}

test("a Blob or stream body goes whole, the SDK's checksum a header", async () => {
  const seen = [];
  const unstub = stub((request) => {
    seen.push(request);
    return { status: 200, headers: { etag: '"1"' } };
  });
  const config = awsConfig({ region: 'us-east-1' });
  const text = 'hello, world';
  const sha256 = createHash('sha256').update(text).digest('base64');
  try {
    const bodies = [new Blob([text]), new Blob(['hello, ', 'world']).stream(), Readable.from([Buffer.from('hello, '), Buffer.from('world')])];
    for (const body of bodies) {
      const { headers, body: framed } = checksumStep(config, body);
      await config.requestHandler.handle({
        method: 'PUT',
        protocol: 'https:',
        hostname: 'b.s3.us-east-1.amazonaws.com',
        path: '/k',
        query: { 'x-id': 'PutObject' },
        headers,
        body: framed,
      });
    }
    assert.equal(seen.length, 3);
    for (const { headers, body } of seen) {
      assert.equal(new TextDecoder().decode(body), text);
      assert.equal(headers['content-length'], '12');
      assert.equal(headers['x-amz-checksum-sha256'], sha256);
      assert.equal(headers['content-type'], 'text/plain');
      assert.equal(headers['x-amz-sdk-checksum-algorithm'], 'SHA256');
      for (const gone of ['content-encoding', 'transfer-encoding', 'x-amz-trailer', 'x-amz-content-sha256']) {
        assert.equal(headers[gone], undefined, gone);
      }
    }
  } finally {
    unstub();
  }
});

test("an S3 key's dot segments reach S3 as the SDK wrote them", async () => {
  const seen = [];
  const unstub = stub((request) => {
    seen.push(request);
    return { status: 200 };
  });
  try {
    for (const path of ['/b/a/../k', '/b/./x', '/b/%2e%2e/y']) {
      await new SfnWasmHttpHandler().handle({ method: 'GET', protocol: 'https:', hostname: 's3.us-east-1.amazonaws.com', path, headers: {} });
    }
    assert.deepEqual(
      seen.map((r) => r.url),
      ['https://s3.us-east-1.amazonaws.com/b/a/../k', 'https://s3.us-east-1.amazonaws.com/b/./x', 'https://s3.us-east-1.amazonaws.com/b/%2e%2e/y'],
    );
    assert.equal(requestTarget('https://h/a b?q=1'), '/a%20b?q=1');
    assert.equal(requestTarget('https://h'), '/');
    assert.equal(requestTarget('https://h?x=1'), '/?x=1');
  } finally {
    unstub();
  }
});
