// Calls an HTTP API and answers with what it got: {"url": "..."} -> {"status": 200, "body": "..."}.
// A refused or failed request fails the task with the wasi:http error the handler saw
// (`HTTP-request-denied`, `connection-read-timeout`, `HTTP-response-body-size`, ...), so a
// state machine can Retry or Catch on it. The host sends the request only where the
// activity's `allowed_outbound_hosts` allows.
//
// It uses `http_client.js` (wasi:http directly) rather than `fetch`: `fetch` works too,
// but rejects every failure with the same TypeError.
import { success, failure } from 'sfn:activity/toolkit@0.2.0';
import { get, HttpError } from './http_client.js';

export function handle(task) {
  const { url } = JSON.parse(task.input);
  let response;
  try {
    response = get(url);
  } catch (err) {
    if (err instanceof HttpError) {
      failure(err.name, err.message);
      return;
    }
    throw err;
  }
  success(JSON.stringify({ status: response.status, body: new TextDecoder().decode(response.body) }));
}
