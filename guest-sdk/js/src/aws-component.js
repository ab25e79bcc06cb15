// `sfn-wasm-guest/aws` inside a component: the AWS SDK for JavaScript v3 over wasi:http.
// Importing it makes `sfn-wasm-guest build` use the world with wasi:http.
import { requestStream } from './http-component.js';
import { awsFailure, configOver, handlerOver, PLACEHOLDER_ACCESS_KEY } from './aws-shared.js';

export const SfnWasmHttpHandler = handlerOver(requestStream);
export const awsConfig = configOver(SfnWasmHttpHandler);
export { awsFailure, PLACEHOLDER_ACCESS_KEY };
