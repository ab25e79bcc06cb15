// Calls an HTTP API and answers with what it got: {"url": "..."} -> {"status": 200, "body": "..."}.
// A refused or failed request fails the task with the error the handler saw. The host
// sends the request only where the activity's `allowed_outbound_hosts` allows.
import { success, failure } from 'sfn:activity/toolkit@0.1.0';

export async function handle(task) {
  const { url } = JSON.parse(task.input);
  try {
    const response = await fetch(url);
    success(JSON.stringify({ status: response.status, body: await response.text() }));
  } catch (err) {
    failure('Fetch.Failed', String(err));
  }
}
