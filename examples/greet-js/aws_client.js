// AWS requests for JavaScript handlers, signed by the host (`[activity.aws]`).
//
// The handler sends plain requests to `https://SERVICE.REGION.amazonaws.com`; the host
// signs each with its own credentials (or the activity's role) and sends it, to `[aws]
// endpoint_url` when one is set. The handler holds no credential. An error reply throws
// AwsError whose `code` is AWS's (`NoSuchKey`); a failed request throws the HttpError of
// http_client.js (`HTTP-request-denied` when the service or region is not granted).
import { request } from './http_client.js';

export class AwsError extends Error {
  constructor(status, code, message) {
    super(`${code} (${status}): ${message}`);
    this.status = status;
    this.code = code;
    this.awsMessage = message;
  }
}

export function endpoint(service, region) {
  return `https://${service}.${region}.amazonaws.com`;
}

/** Sends `method path` to the service's endpoint; returns the response on success. */
export function send(service, region, method, path, { headers = {}, body } = {}) {
  const response = request(method, endpoint(service, region) + path, { headers, body });
  if (response.status >= 200 && response.status < 300) return response;
  throw serviceError(response);
}

/** S3 GetObject: the object's bytes (Uint8Array). */
export function s3GetObject(region, bucket, key) {
  const path = `/${encodeURIComponent(bucket)}/${key.split('/').map(encodeURIComponent).join('/')}`;
  return send('s3', region, 'GET', path).body;
}

/** SQS SendMessage (JSON protocol): the message id. */
export function sqsSendMessage(region, queueUrl, body) {
  const response = send('sqs', region, 'POST', '/', {
    headers: {
      'x-amz-target': 'AmazonSQS.SendMessage',
      'content-type': 'application/x-amz-json-1.0',
    },
    body: JSON.stringify({ QueueUrl: queueUrl, MessageBody: body }),
  });
  return JSON.parse(new TextDecoder().decode(response.body)).MessageId ?? '';
}

function serviceError(response) {
  const text = new TextDecoder().decode(response.body);
  let code = (response.headers['x-amzn-query-error'] ?? '').split(';')[0] || undefined;
  let message = '';
  try {
    const reply = JSON.parse(text);
    code ??= (reply.__type ?? reply.code ?? '').split('#').pop() || undefined;
    message = reply.message ?? reply.Message ?? '';
  } catch {
    code ??= text.match(/<Code>(.*?)<\/Code>/)?.[1];
    message = text.match(/<Message>(.*?)<\/Message>/)?.[1] ?? '';
  }
  return new AwsError(response.status, code ?? `HTTP-${response.status}`, message);
}
