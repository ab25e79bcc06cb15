// Types of `sfn-wasm-guest/aws`: the AWS SDK for JavaScript v3 in a handler, signed by the
// host. `new S3Client(awsConfig({ region: 'us-east-1' }))`.
import { TaskFailure } from './index.js';

/** The access key the SDK signs with inside the guest: a placeholder the host replaces. */
export const PLACEHOLDER_ACCESS_KEY: string;

/** What `awsConfig` returns: spread into any `@aws-sdk/client-*` constructor. */
export interface AwsClientConfig {
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  requestHandler: SfnWasmHttpHandler;
  maxAttempts: number;
  useQueueUrlAsEndpoint: boolean;
  /** A Blob or stream body is sent whole, its checksum a header (not an aws-chunked trailer). */
  getAwsChunkedEncodingStream: (body: unknown, options: unknown) => unknown;
  [key: string]: unknown;
}

/**
 * A client config for a handler: `region` (one `[activity.aws]` grants), placeholder
 * credentials the host replaces with its signature, this SDK's request handler (wasi:http
 * inside a component; Node's fetch or a `stub()` in tests), one attempt (retry in the
 * state machine), SQS on the region's endpoint, not the queue URL's host, and a Blob or
 * stream body's checksum as a header. `overrides` win. Throws TypeError without a region.
 */
export function awsConfig(options: { region: string; [key: string]: unknown }): AwsClientConfig;

/** The AWS SDK's `requestHandler`: response bodies stream as the handler reads them. */
export class SfnWasmHttpHandler {
  readonly metadata: { handlerProtocol: string };
  handle(request: unknown): Promise<{ response: unknown }>;
  updateHttpClientConfig(): void;
  httpHandlerConfigs(): Record<string, never>;
  destroy(): void;
}

/**
 * The TaskFailure to fail the task with for an AWS SDK error: AWS's error code and
 * message (`NoSuchKey`), or the wasi:http error code of a failed request
 * (`HTTP-request-denied`).
 */
export function awsFailure(err: unknown): TaskFailure;
