// What the component's and Node's `sfn-wasm-guest/http` share: the error, the response,
// the request's normal form, and the stub a test puts in place of the network.

/**
 * A failed request. `name` is the wasi:http error code as the WIT spells it
 * (`HTTP-request-denied`, `connection-refused`, `connection-read-timeout`,
 * `HTTP-response-body-size`, ...), so a handler can fail its task with it and a state
 * machine can `Retry` or `Catch` on it.
 */
export class HttpError extends Error {
  constructor(name, detail = '') {
    super(detail ? `${name}: ${detail}` : name);
    this.name = name;
    this.detail = detail;
  }
}

/** A response: `status`, `headers` ({lowercase name: value}), `body` (Uint8Array). */
export class Response {
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }

  /** True for a 2xx status. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** The body as UTF-8 text. */
  text() {
    return new TextDecoder().decode(this.body);
  }

  /** The body parsed as JSON (throws SyntaxError when it is not). */
  json() {
    return JSON.parse(this.text());
  }
}

const encoder = new TextEncoder();

/** The body a caller gave (a string, Uint8Array, ArrayBuffer or nothing) as bytes. */
export function bodyBytes(body) {
  if (body === undefined || body === null) return new Uint8Array();
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('body must be a string, a Uint8Array or an ArrayBuffer');
}

/** Adds `value` to `headers[name]`, a repeated header's values joined with ", " as fetch does. */
export function addHeader(headers, name, value) {
  headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
}

/** Header names lowercased, values as strings. */
export function headerObject(headers = {}) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) out[name.toLowerCase()] = String(value);
  return out;
}

// A URL's path and query as written, when they may go in a request line as they are.
const WRITTEN_TARGET = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([/?][^#]*)?(?:#.*)?$/i;
const REQUEST_TARGET = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/;

/**
 * `url`'s path and query for the request line: as written when every character may go
 * there as it is (a parsed URL resolves `.` and `..` segments, `%2e` ones too, and the
 * S3 key `a/../b` would name the object `b`), else as a parsed URL escapes them. Always
 * starts with `/`.
 */
export function requestTarget(url) {
  const written = WRITTEN_TARGET.exec(url)?.[1];
  if (written !== undefined && REQUEST_TARGET.test(written)) {
    return written.startsWith('/') ? written : `/${written}`;
  }
  const parsed = new URL(url);
  return `${parsed.pathname || '/'}${parsed.search}`;
}

/** `{method, url, headers, body}` as every transport (and a stub) sees a request. */
export function normalize(method, url, { headers, body } = {}) {
  const parsed = new URL(url);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(`not an http(s) URL: ${url}`);
  }
  return {
    method: String(method).toUpperCase(),
    url: `${parsed.protocol}//${parsed.host}${requestTarget(url)}`,
    headers: headerObject(headers),
    body: bodyBytes(body),
  };
}

// The tests' stand-ins for the network, latest last; the latest answers.
const stubs = [];

/**
 * Puts `fn(request)` in place of the network: every request goes to it instead, and what
 * it returns (or resolves to), `{status = 200, headers = {}, body = ''}`, is the
 * response; what it throws is thrown (throw an HttpError to act out a failure). Returns
 * a function that takes the stub away again. For tests in Node.js.
 */
export function stub(fn) {
  if (typeof fn !== 'function') throw new TypeError('stub() takes a function (request) => response');
  const entry = { fn };
  stubs.push(entry);
  // Takes this stub away, whichever order overlapping stubs are taken away in.
  return () => {
    const at = stubs.indexOf(entry);
    if (at >= 0) stubs.splice(at, 1);
  };
}

/** The stub's response to `request`, or undefined when no stub is in place. */
export async function fromStub(request) {
  if (stubs.length === 0) return undefined;
  const { status = 200, headers = {}, body } = (await stubs[stubs.length - 1].fn(request)) ?? {};
  return new Response(status, headerObject(headers), bodyBytes(body));
}
