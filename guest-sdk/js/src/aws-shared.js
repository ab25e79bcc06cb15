// What the component's and Node's `sfn-wasm-guest/aws` share: the AWS SDK for
// JavaScript v3's request handler over this SDK's HTTP client, and the client config.
//
// The handler holds no credential: the SDK signs with placeholder credentials, and the
// host removes that signature and signs again with its own (or the activity's role),
// for the services and regions `[activity.aws]` grants; any other request fails with
// `HTTP-request-denied`.
import { TaskFailure } from './core.js';

/** The access key the SDK signs with inside the guest: a placeholder the host replaces. */
export const PLACEHOLDER_ACCESS_KEY = 'SIGNED-BY-THE-HOST';

// RFC 3986 escaping, as the SDK's own query builder does.
function escape(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** A request's `query` ({name: value | value[] | null}) as the SDK writes it. */
export function queryString(query = {}) {
  const parts = [];
  for (const key of Object.keys(query).sort()) {
    const value = query[key];
    const name = escape(key);
    if (Array.isArray(value)) {
      for (const item of value) parts.push(`${name}=${escape(item)}`);
    } else if (value || typeof value === 'string') {
      parts.push(`${name}=${escape(value)}`);
    } else {
      parts.push(name);
    }
  }
  return parts.join('&');
}

// A request body as bytes: the SDK hands strings, byte arrays, Blobs and streams (web
// streams in a component, Node streams in a handler's tests). It is sent whole.
async function bodyOf(body) {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string' || body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (typeof body.getReader === 'function') return collect(readerChunks(body.getReader()));
  if (typeof body.arrayBuffer === 'function') return new Uint8Array(await body.arrayBuffer());
  if (typeof body[Symbol.asyncIterator] === 'function') return collect(body);
  throw new TypeError(`a request body the handler cannot send: ${Object.prototype.toString.call(body)}`);
}

async function* readerChunks(reader) {
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    yield value;
  }
}

async function collect(chunks) {
  const parts = [];
  let length = 0;
  for await (const value of chunks) {
    const chunk = typeof value === 'string' ? new TextEncoder().encode(value) : new Uint8Array(value);
    parts.push(chunk);
    length += chunk.length;
  }
  return concat(parts, length);
}

function concat(parts, length) {
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

// Headers a request over wasi:http does not carry: the transport writes Host from the
// URL and frames the body by its declared `content-length`.
const TRANSPORT_HEADERS = ['host', 'transfer-encoding'];
// What the SDK's checksum step sets for a body it frames as aws-chunked.
const AWS_CHUNKED_HEADERS = ['x-amz-trailer', 'x-amz-decoded-content-length', 'x-amz-content-sha256'];

/**
 * A `Blob` or stream body (S3 `PutObject`'s `Body`) with the checksum the SDK asked for,
 * computed when it is sent: what {@link checksummedBody} gives the SDK in place of its
 * aws-chunked stream.
 */
class ChecksummedBody {
  constructor(body, { checksumAlgorithmFn, checksumLocationName, base64Encoder }) {
    this.body = body;
    this.algorithm = checksumAlgorithmFn;
    this.name = checksumLocationName;
    this.encode = base64Encoder;
  }

  /** `{bytes, checksum}`: the body read whole and its base64 checksum (or undefined). */
  async resolve() {
    const read = (await bodyOf(this.body)) ?? new Uint8Array();
    const bytes = typeof read === 'string' ? new TextEncoder().encode(read) : read;
    let checksum;
    if (this.algorithm && this.name && this.encode) {
      const hash = new this.algorithm();
      hash.update(bytes);
      checksum = this.encode(await hash.digest());
    }
    return { bytes, checksum };
  }
}

/**
 * The SDK's `getAwsChunkedEncodingStream` in a handler's clients (`awsConfig` sets it).
 * For a `Blob` or stream body the SDK's default checksum frames the body as aws-chunked
 * with the checksum in a trailer; its browser build cannot (it reads a Blob as a stream,
 * and writes byte chunks as text), and a request body goes whole anyway. So the body is
 * read whole when it is sent, and its checksum goes as a header over a plain body
 * (`content-length` declared): S3 checks the same checksum over the same bytes.
 */
export function checksummedBody(body, options = {}) {
  return new ChecksummedBody(body, options);
}

/**
 * The SDK's `requestHandler` over `requestStream(method, url, options)` (resolving to
 * `{status, headers, body: ReadableStream}`): a response body streams to the handler as
 * it reads it (S3 `GetObject`'s `Body`).
 */
export function handlerOver(requestStream) {
  return class SfnWasmHttpHandler {
    constructor() {
      this.metadata = { handlerProtocol: 'http/1.1' };
    }

    async handle(request) {
      const query = queryString(request.query ?? {});
      const port = request.port ? `:${request.port}` : '';
      const url = `${request.protocol}//${request.hostname}${port}${request.path}${query ? `?${query}` : ''}`;
      const headers = {};
      for (const [name, value] of Object.entries(request.headers ?? {})) headers[name.toLowerCase()] = value;
      let body;
      if (request.body instanceof ChecksummedBody) {
        const sent = await request.body.resolve();
        body = sent.bytes;
        for (const name of AWS_CHUNKED_HEADERS) delete headers[name];
        const encodings = (headers['content-encoding'] ?? '')
          .split(',')
          .map((e) => e.trim())
          .filter((e) => e && e.toLowerCase() !== 'aws-chunked');
        if (encodings.length) headers['content-encoding'] = encodings.join(',');
        else delete headers['content-encoding'];
        if (sent.checksum !== undefined) headers[request.body.name] = sent.checksum;
        headers['content-length'] = String(body.length);
      } else {
        body = await bodyOf(request.body);
      }
      for (const name of TRANSPORT_HEADERS) delete headers[name];
      const response = await requestStream(request.method, url, { headers, body });
      return {
        response: { statusCode: response.status, reason: '', headers: response.headers, body: response.body },
      };
    }

    updateHttpClientConfig() {}

    httpHandlerConfigs() {
      return {};
    }

    destroy() {}
  };
}

/**
 * The config every AWS SDK client of a handler takes (`new S3Client(awsConfig({ region:
 * 'us-east-1' }))`): the region, placeholder credentials the host replaces, this SDK's
 * request handler, one attempt (a retry waits on a timer a handler's call does not
 * run: retry in the state machine, on the error the handler fails with), SQS on the
 * region's endpoint rather than the queue URL's host, and a Blob or stream body's
 * checksum as a header ({@link checksummedBody}). `overrides` win.
 */
export function configOver(Handler) {
  return function awsConfig({ region, ...overrides } = {}) {
    if (!region) throw new TypeError("awsConfig() needs { region: 'us-east-1' } (the region the activity grants)");
    return {
      region,
      credentials: { accessKeyId: PLACEHOLDER_ACCESS_KEY, secretAccessKey: 'the host signs this request' },
      requestHandler: new Handler(),
      maxAttempts: 1,
      // SQS: call the region's endpoint, not the queue URL's host (an emulator's URL
      // names a host the grant does not cover); the host sends AWS requests where
      // `[aws] endpoint_url` says.
      useQueueUrlAsEndpoint: false,
      // A Blob or stream body's checksum as a header over the whole body, not in an
      // aws-chunked trailer (see checksummedBody).
      getAwsChunkedEncodingStream: checksummedBody,
      ...overrides,
    };
  };
}

/**
 * The TaskFailure an AWS SDK error fails the task with: AWS's error code (`NoSuchKey`,
 * `QueueDoesNotExist`) and message, or the wasi:http error code of a request that failed
 * (`HTTP-request-denied` when the activity is not granted that service in that region).
 */
export function awsFailure(err) {
  if (err instanceof TaskFailure) return err;
  const name = typeof err?.name === 'string' && err.name ? err.name : 'Error';
  const message = err?.detail || err?.message || String(err);
  return new TaskFailure(name, message);
}
