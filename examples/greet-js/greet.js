// The greet handler in JavaScript: {"hello": "X"} -> {"greeting": "Hello, X"}.
import { success } from 'sfn:activity/toolkit@0.2.0';

export function handle(task) {
  const input = JSON.parse(task.input);
  success(JSON.stringify({ greeting: `Hello, ${input.hello}` }));
}
