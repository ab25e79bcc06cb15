// `sfn-wasm-guest/http` outside a component (Node.js: a handler's own tests): the same
// names as inside, over Node's `fetch`, or over the function a test gives `stub()`.
// Nothing here checks `allowed_outbound_hosts`: that is the host's, inside a component.
import { HttpError, Response, fromStub, headerObject, normalize } from './http-shared.js';

export { HttpError, Response, stub } from './http-shared.js';

// Node's network errors (undici's and the system's codes) as wasi:http names them.
const CODES = {
  ECONNREFUSED: 'connection-refused',
  ECONNRESET: 'connection-terminated',
  EPIPE: 'connection-terminated',
  ENOTFOUND: 'DNS-error',
  EAI_AGAIN: 'DNS-error',
  ETIMEDOUT: 'connection-timeout',
  UND_ERR_CONNECT_TIMEOUT: 'connection-timeout',
  UND_ERR_HEADERS_TIMEOUT: 'connection-read-timeout',
  UND_ERR_BODY_TIMEOUT: 'connection-read-timeout',
  UND_ERR_SOCKET: 'connection-terminated',
  CERT_HAS_EXPIRED: 'TLS-certificate-error',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'TLS-certificate-error',
  SELF_SIGNED_CERT_IN_CHAIN: 'TLS-certificate-error',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS-certificate-error',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS-certificate-error',
};

async function send({ method, url, headers, body }) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: method === 'GET' || method === 'HEAD' ? undefined : body,
      redirect: 'manual',
    });
  } catch (err) {
    const code = err?.cause?.code ?? err?.code;
    throw new HttpError(CODES[code] ?? 'internal-error', err?.cause?.message ?? err?.message ?? String(err));
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  return new Response(response.status, headerObject(Object.fromEntries(response.headers)), bytes);
}

/**
 * Sends `method url` with `headers` ({name: value}) and `body` (a string, Uint8Array or
 * ArrayBuffer); resolves to a Response once its whole body is read. Rejects with an
 * HttpError named as wasi:http would name the failure.
 */
export async function request(method, url, options) {
  const normal = normalize(method, url, options);
  return (await fromStub(normal)) ?? send(normal);
}

/** `GET url`, as `request`. */
export function get(url, options) {
  return request('GET', url, options);
}
