import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TaskFailure } from '../src/index.js';
import { HttpError, stub } from '../src/http-node.js';
import { PLACEHOLDER_ACCESS_KEY, SfnWasmHttpHandler, awsConfig, awsFailure } from '../src/aws-node.js';
import { queryString } from '../src/aws-shared.js';

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
  const mine = new TaskFailure('Mine', 'kept');
  assert.equal(awsFailure(mine), mine);
});
