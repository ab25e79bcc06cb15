// A blocking HTTP request over wasi:http for JavaScript handlers (ComponentizeJS
// bindings), so that a failure carries its wasi:http error code, as the Rust SDK and the
// Python helper do. `fetch` reports every failure as the same TypeError: a state machine
// could not Retry or Catch on `connection-read-timeout` or `HTTP-response-body-size`.
//
// The host sends a request only where the activity's `allowed_outbound_hosts` allows; any
// other fails with HTTP-request-denied, thrown here as an HttpError whose `name` is the
// error code's WIT name.
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import {
  Fields,
  OutgoingRequest,
  OutgoingBody,
  httpErrorCode,
} from 'wasi:http/types@0.2.12';

/** A failed request; `name` is the wasi:http error code (`HTTP-request-denied`). */
export class HttpError extends Error {
  constructor(code, detail) {
    const name = code ? code.tag : 'HTTP-error';
    super(detail ? `${name}: ${detail}` : name);
    this.name = name;
    this.code = code;
  }
}

// What a binding threw for a `result` error: jco-style bindings throw the payload
// wrapped in an Error with a `payload` property.
function payloadOf(err) {
  return err && typeof err === 'object' && 'payload' in err ? err.payload : err;
}

function describe(code) {
  if (code.tag === 'HTTP-response-body-size' && code.val !== undefined) {
    return `over the task's ${code.val} bytes (outbound.max_response_bytes)`;
  }
  if (code.tag === 'internal-error' && code.val) return code.val;
  return '';
}

function failed(code) {
  return new HttpError(code, describe(code));
}

/**
 * Sends `method url` with `headers` ({name: value}) and `body` (a string or Uint8Array);
 * returns {status, headers, body: Uint8Array}. Throws HttpError.
 */
export function request(method, url, { headers = {}, body } = {}) {
  const parsed = new URL(url);
  const fields = Fields.fromList(
    Object.entries(headers).map(([name, value]) => [name, new TextEncoder().encode(String(value))]),
  );
  const outgoing = new OutgoingRequest(fields);
  const known = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
  const upper = method.toUpperCase();
  outgoing.setMethod(known.includes(upper) ? { tag: upper.toLowerCase() } : { tag: 'other', val: method });
  outgoing.setScheme(parsed.protocol === 'https:' ? { tag: 'HTTPS' } : { tag: 'HTTP' });
  outgoing.setAuthority(parsed.host);
  outgoing.setPathWithQuery(`${parsed.pathname || '/'}${parsed.search}`);
  const outgoingBody = outgoing.body();
  let future;
  try {
    // Sent before the body is written: the host reads the body as it sends it.
    future = handle(outgoing, undefined);
  } catch (err) {
    throw failed(payloadOf(err));
  }
  let writeError;
  {
    const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
    const stream = outgoingBody.write();
    try {
      for (let at = 0; bytes && at < bytes.length; at += 4096) {
        stream.blockingWriteAndFlush(bytes.subarray(at, at + 4096));
      }
    } catch (err) {
      writeError = streamError(payloadOf(err));
    }
    stream[Symbol.dispose]?.();
  }
  try {
    OutgoingBody.finish(outgoingBody, undefined);
  } catch (err) {
    writeError ??= failed(payloadOf(err));
  }
  future.subscribe().block();
  // option<result<result<incoming-response, error-code>>>: the option comes unwrapped,
  // each result as {tag: 'ok' | 'err', val}.
  const ready = future.get();
  if (ready === undefined) throw new HttpError(undefined, 'the response was not ready');
  if (ready.tag === 'err') throw new HttpError(undefined, 'the response was taken twice');
  if (ready.val.tag === 'err') throw failed(ready.val.val);
  const response = ready.val.val;
  if (writeError) throw writeError;
  const status = response.status();
  const responseHeaders = {};
  for (const [name, value] of response.headers().entries()) {
    responseHeaders[name] = new TextDecoder().decode(value);
  }
  const incoming = response.consume();
  const stream = incoming.stream();
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (err) {
      const payload = payloadOf(err);
      if (payload && payload.tag === 'closed') break;
      throw streamError(payload);
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return { status, headers: responseHeaders, body: bytes };
}

/** `GET url`; as `request`. */
export function get(url, options) {
  return request('GET', url, options);
}

function streamError(payload) {
  if (payload && payload.tag === 'last-operation-failed') {
    const code = httpErrorCode(payload.val);
    return code ? failed(code) : new HttpError(undefined, payload.val.toDebugString());
  }
  return new HttpError({ tag: 'connection-terminated' }, 'the stream closed');
}
