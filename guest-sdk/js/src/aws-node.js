// `sfn-wasm-guest/aws` outside a component (Node.js: a handler's own tests): the same
// config over Node's `fetch`, or over the function a test gives `stub()` of
// `sfn-wasm-guest/http`. Nothing here signs for the host: point tests at a stub.
import { request } from './http-node.js';
import { awsFailure, configOver, handlerOver, PLACEHOLDER_ACCESS_KEY } from './aws-shared.js';

async function requestStream(method, url, options) {
  const response = await request(method, url, options);
  const bytes = response.body;
  const body = new ReadableStream({
    start(controller) {
      if (bytes.length) controller.enqueue(bytes);
      controller.close();
    },
  });
  return { status: response.status, headers: response.headers, body };
}

export const SfnWasmHttpHandler = handlerOver(requestStream);
export const awsConfig = configOver(SfnWasmHttpHandler);
export { awsFailure, PLACEHOLDER_ACCESS_KEY };
