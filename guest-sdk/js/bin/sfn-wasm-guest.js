#!/usr/bin/env node
// sfn-wasm-guest build [ENTRY] [-o OUT] [--wit DIR] [--world NAME]
//
// Builds a handler component: bundles ENTRY (default src/handler.js) and what it imports
// (this SDK's component build among them) into one module with rolldown, then makes a
// component of it with ComponentizeJS: for the sfn:activity `handler` world, or, when the
// bundle imports wasi:http (`sfn-wasm-guest/http` or `sfn-wasm-guest/aws`), for
// `handler-with-http` (wit-http/:
// the same world plus wasi:http's outgoing handler), unless --wit or --world say
// otherwise. OUT defaults to the package's name + `.wasm`. Exit 0 when written, 1 when
// the build failed, 2 for bad arguments.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const usage = 'usage: sfn-wasm-guest build [ENTRY] [-o OUT] [--wit DIR] [--world NAME]';

function parse(argv) {
  const [command, ...rest] = argv;
  if (command !== 'build') return null;
  const opts = { entry: undefined, out: undefined, wit: undefined, world: undefined };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    const value = () => {
      if (i + 1 >= rest.length) throw new Error(`${arg} needs a value`);
      return rest[++i];
    };
    if (arg === '-o' || arg === '--out') opts.out = value();
    else if (arg === '--wit') opts.wit = value();
    else if (arg === '--world') opts.world = value();
    else if (arg.startsWith('-')) throw new Error(`unknown flag ${arg}`);
    else if (opts.entry === undefined) opts.entry = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  return opts;
}

async function packageName() {
  try {
    const pkg = JSON.parse(await readFile('package.json', 'utf8'));
    return String(pkg.name ?? 'handler').replace(/^@[^/]+\//, '');
  } catch {
    return 'handler';
  }
}

// Browser builds that need the DOM, which a component does not have, and the plain
// module of the same package to bundle instead: the AWS SDK's XML parser (S3 and the
// other XML services) reads with DOMParser in its browser build, and with its own
// parser in the other.
const DOM_BUILDS = [/[\\/]@aws-sdk[\\/]xml-builder[\\/]dist-es[\\/]xml-parser\.browser\.js$/];

const withoutDom = {
  name: 'sfn-wasm-guest-without-dom',
  async load(id) {
    if (!DOM_BUILDS.some((build) => build.test(id))) return null;
    return readFile(id.replace(/\.browser\.js$/, '.js'), 'utf8');
  },
};

async function build(opts) {
  const entry = resolve(opts.entry ?? 'src/handler.js');
  const out = resolve(opts.out ?? `${await packageName()}.wasm`);
  await stat(entry).catch(() => {
    throw new Error(`${entry}: no such file (the handler's module; give its path as ENTRY)`);
  });
  const { rolldown } = await import('rolldown');
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const dir = await mkdtemp(join(tmpdir(), 'sfn-wasm-guest-'));
  try {
    const bundlePath = join(dir, 'handler.js');
    const bundle = await rolldown({
      input: entry,
      // A component is a web-style runtime (fetch, streams, no Node built-ins): packages
      // that ship a browser build (the AWS SDK for JavaScript v3's clients, with their
      // `browser` field) are bundled as that build.
      platform: 'browser',
      // The host's interfaces are the component's imports, not modules to bundle.
      external: [/^sfn:/, /^wasi:/],
      resolve: { conditionNames: ['sfn-wasm-component', 'browser', 'import', 'default'] },
      plugins: [withoutDom],
      logLevel: 'warn',
    });
    const { output } = await bundle.write({ file: bundlePath, format: 'esm' });
    await bundle.close();
    // A handler that makes HTTP calls imports wasi:http: build it for the world that
    // has it; any other imports nothing of wasi:http and is linked without it.
    const http = opts.world
      ? opts.world === 'handler-with-http'
      : output.some((chunk) => (chunk.imports ?? []).some((id) => id.startsWith('wasi:http/')));
    const sdkWit = fileURLToPath(new URL(http ? '../wit-http' : '../wit', import.meta.url));
    const wit = opts.wit ? resolve(opts.wit) : sdkWit;
    const world = opts.world ?? (http && !opts.wit ? 'handler-with-http' : 'handler');
    const { component } = await componentize({
      sourcePath: bundlePath,
      witPath: wit,
      worldName: world,
      disableFeatures: ['http', 'fetch-event'],
    });
    await writeFile(out, component);
    console.log(`wrote ${out} (${(component.length / 1e6).toFixed(1)} MB, world ${world})`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

let opts;
try {
  opts = parse(process.argv.slice(2));
} catch (err) {
  console.error(`error: ${err.message}\n${usage}`);
  process.exit(2);
}
if (!opts) {
  console.error(usage);
  process.exit(2);
}
try {
  await build(opts);
} catch (err) {
  console.error(`error: ${err?.message ?? err}`);
  process.exit(1);
}
