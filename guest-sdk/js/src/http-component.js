// `sfn-wasm-guest/http` inside a component: requests over wasi:http, so that a failure
// carries its wasi:http error code (ComponentizeJS's `fetch` rejects every failure with
// the same TypeError, and a state machine could not tell a denied request from a timeout).
// Importing this module makes `sfn-wasm-guest build` use the world with wasi:http.
//
// The host sends a request only where the activity's `allowed_outbound_hosts` allows; any
// other fails with `HTTP-request-denied`.
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingRequest, OutgoingBody, httpErrorCode } from 'wasi:http/types@0.2.12';
import { HttpError, Response, addHeader, fromStub, normalize, requestTarget } from './http-shared.js';

export { HttpError, Response, stub } from './http-shared.js';

// What a binding threw for a `result` error: jco-style bindings throw the payload
// wrapped in an Error with a `payload` property.
function payloadOf(err) {
  return err && typeof err === 'object' && 'payload' in err ? err.payload : err;
}

// The host says no more to the guest (why is in its log: the destination may be secret).
const DENIED = "the host sends no request there: the activity's allowed_outbound_hosts or [activity.aws] does not grant it (the host logs outbound:denied with why)";

function failed(code) {
  if (!code || typeof code !== 'object' || !code.tag) return new HttpError('HTTP-error', String(code ?? ''));
  let detail = '';
  if (code.tag === 'HTTP-response-body-size' && code.val !== undefined) {
    detail = `over the task's ${code.val} bytes (outbound.max_response_bytes)`;
  } else if (code.tag === 'HTTP-request-denied') {
    detail = DENIED;
  } else if (code.tag === 'internal-error' && code.val) {
    detail = code.val;
  }
  return new HttpError(code.tag, detail);
}

function streamError(payload) {
  if (payload && payload.tag === 'last-operation-failed') {
    const code = httpErrorCode(payload.val);
    return code ? failed(code) : new HttpError('HTTP-error', payload.val.toDebugString());
  }
  return new HttpError('connection-terminated', 'the stream closed');
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// One request over wasi:http, up to its response head: status, headers, and a blocking
// `read()` of the next body chunk (undefined at the end).
function open({ method, url, headers, body }) {
  const parsed = new URL(url);
  let fields;
  try {
    fields = Fields.fromList(Object.entries(headers).map(([name, value]) => [name, encoder.encode(value)]));
  } catch (err) {
    // A header wasi:http does not take (a forbidden name, invalid syntax).
    throw new HttpError('internal-error', `a request header was refused (${payloadOf(err)?.tag ?? err})`);
  }
  const outgoing = new OutgoingRequest(fields);
  try {
    outgoing.setMethod(METHODS.includes(method) ? { tag: method.toLowerCase() } : { tag: 'other', val: method });
    outgoing.setScheme(parsed.protocol === 'https:' ? { tag: 'HTTPS' } : { tag: 'HTTP' });
    outgoing.setAuthority(parsed.host);
    outgoing.setPathWithQuery(requestTarget(url));
  } catch {
    throw new HttpError('HTTP-request-URI-invalid', url);
  }
  const outgoingBody = outgoing.body();
  let future;
  try {
    // Sent before the body is written: the host reads the body as it sends it.
    future = handle(outgoing, undefined);
  } catch (err) {
    throw failed(payloadOf(err));
  }
  let writeError;
  const stream = outgoingBody.write();
  try {
    for (let at = 0; at < body.length; at += 4096) stream.blockingWriteAndFlush(body.subarray(at, at + 4096));
  } catch (err) {
    writeError = streamError(payloadOf(err));
  }
  stream[Symbol.dispose]?.();
  try {
    OutgoingBody.finish(outgoingBody, undefined);
  } catch (err) {
    writeError ??= failed(payloadOf(err));
  }
  future.subscribe().block();
  // option<result<result<incoming-response, error-code>>>: the option comes unwrapped,
  // each result as {tag: 'ok' | 'err', val}.
  const ready = future.get();
  if (ready === undefined) throw new HttpError('HTTP-error', 'the response was not ready');
  if (ready.tag === 'err') throw new HttpError('HTTP-error', 'the response was taken twice');
  if (ready.val.tag === 'err') throw failed(ready.val.val);
  if (writeError) throw writeError;
  const response = ready.val.val;
  const responseHeaders = {};
  for (const [name, value] of response.headers().entries()) addHeader(responseHeaders, name, decoder.decode(value));
  const incoming = response.consume();
  const input = incoming.stream();
  let ended = false;
  // Gives the body's handles back to the host: at its end, or when the reader stops early.
  const close = () => {
    if (ended) return;
    ended = true;
    input[Symbol.dispose]?.();
    incoming[Symbol.dispose]?.();
  };
  const read = () => {
    if (ended) return undefined;
    try {
      return input.blockingRead(65536n);
    } catch (err) {
      const payload = payloadOf(err);
      close();
      if (payload && payload.tag === 'closed') return undefined;
      throw streamError(payload);
    }
  };
  return { status: response.status(), headers: responseHeaders, read, close };
}

// One request over wasi:http, blocking until the whole response body is read.
function send(request) {
  const { status, headers, read } = open(request);
  const chunks = [];
  let length = 0;
  for (let chunk = read(); chunk !== undefined; chunk = read()) {
    chunks.push(chunk);
    length += chunk.length;
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return new Response(status, headers, bytes);
}

/**
 * Sends `method url` as `request` does, but resolves once the response's head has come:
 * `{status, headers, body}` with `body` a ReadableStream of Uint8Array chunks, each read
 * from the host when the reader asks for it (a large body is never held whole). Errors
 * while reading the body error the stream with the HttpError. For clients that stream,
 * such as the AWS SDK's (`sfn-wasm-guest/aws`).
 */
export async function requestStream(method, url, options) {
  const normal = normalize(method, url, options);
  const stubbed = await fromStub(normal);
  if (stubbed) return { status: stubbed.status, headers: stubbed.headers, body: streamOf(stubbed.body) };
  const { status, headers, read, close } = open(normal);
  const body = new ReadableStream({
    pull(controller) {
      try {
        const chunk = read();
        if (chunk === undefined) controller.close();
        else controller.enqueue(chunk);
      } catch (err) {
        controller.error(err);
      }
    },
    cancel() {
      close();
    },
  });
  return { status, headers, body };
}

function streamOf(bytes) {
  return new ReadableStream({
    start(controller) {
      if (bytes.length) controller.enqueue(bytes);
      controller.close();
    },
  });
}

/**
 * Sends `method url` with `headers` ({name: value}) and `body` (a string, Uint8Array or
 * ArrayBuffer); resolves to a Response once its whole body is read. Rejects with an
 * HttpError named by the wasi:http error code.
 */
export async function request(method, url, options) {
  const normal = normalize(method, url, options);
  return (await fromStub(normal)) ?? send(normal);
}

/** `GET url`, as `request`. */
export function get(url, options) {
  return request('GET', url, options);
}
