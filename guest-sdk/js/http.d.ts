// Types of `sfn-wasm-guest/http`: outbound HTTP for handlers. Inside a component it goes
// through wasi:http (the host checks `allowed_outbound_hosts`); in Node.js (tests) through
// `fetch`, or through the function given to `stub()`.

/** What a request carries. */
export interface RequestOptions {
  /** Header names and values. */
  headers?: Record<string, string>;
  /** The request body. */
  body?: string | Uint8Array | ArrayBuffer;
}

/** A request as a stub sees it: the method uppercased, header names lowercased. */
export interface StubRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** What a stub returns: defaults 200, no headers, an empty body. */
export interface StubResponse {
  status?: number;
  headers?: Record<string, string>;
  body?: string | Uint8Array | ArrayBuffer;
}

/** A response whose body has been read to its end. */
export class Response {
  constructor(status: number, headers: Record<string, string>, body: Uint8Array);
  /** The HTTP status code. */
  readonly status: number;
  /** Header names (lowercase) and values; a repeated header's values joined with ", ". */
  readonly headers: Record<string, string>;
  /** The body's bytes. */
  readonly body: Uint8Array;
  /** True for a 2xx status. */
  readonly ok: boolean;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as JSON; throws SyntaxError when it is not JSON. */
  json(): unknown;
}

/**
 * A failed request. `name` is the wasi:http error code as the WIT spells it
 * (`HTTP-request-denied`, `connection-refused`, `connection-read-timeout`,
 * `HTTP-response-body-size`, ...).
 */
export class HttpError extends Error {
  constructor(name: string, detail?: string);
  /** The text after the name, or ''. */
  readonly detail: string;
}

/**
 * Sends a request; resolves once the whole body is read; rejects with HttpError. Throws
 * TypeError for a URL that is not http(s).
 */
export function request(method: string, url: string, options?: RequestOptions): Promise<Response>;

/** `GET url`, as `request`. */
export function get(url: string, options?: RequestOptions): Promise<Response>;

/**
 * Puts `fn` in place of the network for every request until the returned function is
 * called; a thrown HttpError acts out a failure. For tests.
 */
export function stub(
  fn: (request: StubRequest) => StubResponse | void | Promise<StubResponse | void>,
): () => void;
