// The scenarios handler in JavaScript: the input's "hello" picks a behaviour, as in
// examples/scenarios (Rust).
import { success, failure, heartbeat } from 'sfn:activity/toolkit@0.2.0';

// `handle` returns result<_, string>: a thrown string becomes `err`, which the host
// answers as SfnWasmHost.HandlerError with the string as the cause. Anything else thrown
// (an Error object) cannot be converted and traps, losing its message, so turn it into
// its text first.
export function handle(task) {
  try {
    run(task);
  } catch (e) {
    throw `${e}`;
  }
}

function run(task) {
  const { hello } = JSON.parse(task.input);
  const greeting = JSON.stringify({ greeting: `Hello, ${hello}` });
  switch (hello) {
    case 'World':
      success(greeting);
      break;
    case 'Heartbeat':
      heartbeat();
      success(greeting);
      break;
    case 'Failure':
      failure('InvalidName', 'Failure is not a valid name');
      break;
    case 'Duplicate':
      success(greeting);
      try {
        failure('Duplicate', 'a second answer');
      } catch (e) {
        // The first answer stands; the second is refused.
        if (e.payload?.tag !== 'already-responded') throw `unexpected: ${JSON.stringify(e.payload)}`;
      }
      break;
    case 'Refuse':
      throw 'refused on purpose';
    case 'Error':
      throw new Error('the Error scenario throws on purpose');
    case 'Loop':
      for (;;) {}
    default:
      failure('UnknownScenario', `no scenario named ${JSON.stringify(hello)}`);
  }
}
