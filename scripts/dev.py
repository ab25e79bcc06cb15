"""Runs YOUR handler against the local emulator: the demo for any handler.

Creates an activity and a one-state machine (with HeartbeatSeconds and a Retry on the
retriable SfnWasmHost.* errors) in the emulator (with --callback: an SQS queue with a
dead-letter queue, and a state machine whose task is a `.waitForTaskToken` message to it), writes a config (yours, pointed at the
emulator, if --config is given), serves the handler, runs one execution per --input,
prints each status and output, and stops the host. Prints the emulator's endpoint and
the commands it ran, so that they can be repeated by hand. Run through scripts/dev.sh,
which builds the host and starts the emulator.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from emulator import activity_and_machine  # noqa: E402

# The host's failures worth retrying on another host or later: it stopped, it was full,
# or it went wrong itself.
RETRIABLE = ["SfnWasmHost.Shutdown", "SfnWasmHost.Capacity", "SfnWasmHost.Internal", "SfnWasmHost.Duplicate"]


def toml_value(value):
    """A TOML value, for the subset a config uses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"cannot write {value!r} as TOML")


def toml_table(name, table, out, array=False):
    """Writes `table` as `[name]` (or `[[name]]`): plain keys, then sub-tables."""
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and not (
        isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
    out.append(f"[[{name}]]" if array else f"[{name}]")
    for key, value in plain.items():
        out.append(f"{key} = {toml_value(value)}")
    out.append("")
    for key, value in table.items():
        if key in plain:
            continue
        if isinstance(value, dict):
            if key == "env":
                out.append(f"[{name}.env]")
                for k, v in value.items():
                    out.append(f"{json.dumps(k)} = {toml_value(v)}")
                out.append("")
            else:
                toml_table(f"{name}.{key}", value, out)
        else:
            for item in value:
                toml_table(f"{name}.{key}", item, out, array=True)


def config_text(config):
    out = []
    for name in ("aws", "host"):
        if name in config:
            toml_table(name, config[name], out)
    for kind in ("activity", "callback"):
        for table in config.get(kind, []):
            toml_table(kind, table, out, array=True)
    return "\n".join(out) + "\n"


def callback_queue_and_machine(endpoint, sfn, name, task_state):
    """A fresh SQS queue `NAME-RANDOM` (its dead-letter queue after 3 receives) and a state
    machine whose one state sends `{"TaskToken", "input"}` to it and waits for the token.
    Returns (queue URL, state machine ARN, the state's definition)."""
    import uuid
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    suffix = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"{name}-{suffix}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    queue = sqs.create_queue(QueueName=f"{name}-{suffix}", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    print(f"ran: aws --endpoint-url {endpoint} sqs create-queue --queue-name {name}-{suffix} "
          f"--attributes '{json.dumps({'RedrivePolicy': redrive})}'  (and its dead-letter queue {name}-{suffix}-dlq)")
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"QueueUrl": queue, "MessageBody": {"TaskToken.$": "$$.Task.Token", "input.$": "$"}},
        **task_state,
        "End": True,
    }
    definition = {"StartAt": "Work", "States": {"Work": state}}
    machine = sfn.create_state_machine(
        name=f"{name}-{suffix}", definition=json.dumps(definition),
        roleArn="arn:aws:iam::000000000000:role/sfn-wasm-host-scripts",
    )["stateMachineArn"]
    return queue, machine, definition


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("host")
    parser.add_argument("handler")
    parser.add_argument("workdir")
    parser.add_argument("--input", action="append", default=[], help="a task input (JSON); repeat for more executions")
    parser.add_argument("--config", help="your config.toml: its first [[activity]] (or [[callback]]) serves the handler, pointed at the emulator")
    parser.add_argument("--callback", action="store_true", help="serve the handler as a callback task from an SQS queue instead of an activity")
    args = parser.parse_args()
    inputs = args.input or ['{"hello": "World"}']
    for text in inputs:
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            sys.exit(f"error: --input {text!r} is not JSON: {err}")

    print(f"emulator: {args.endpoint}  (AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1)")
    sfn = boto3.client("stepfunctions", endpoint_url=args.endpoint)
    name = os.path.splitext(os.path.basename(args.handler))[0].replace("_", "-")
    task_state = {
        "TimeoutSeconds": 300,
        "HeartbeatSeconds": 60,
        "Retry": [{"ErrorEquals": RETRIABLE, "IntervalSeconds": 1, "MaxAttempts": 2}],
    }
    kind = "callback" if args.callback else "activity"
    if args.callback:
        queue, machine, definition = callback_queue_and_machine(args.endpoint, sfn, name, task_state)
    else:
        activity, machine = activity_and_machine(sfn, name, task_state)
        print(f"ran: aws --endpoint-url {args.endpoint} stepfunctions create-activity --name {activity.rsplit(':', 1)[1]}")
        definition = {"StartAt": "Work", "States": {"Work": {
            "Type": "Task", "Resource": activity, **task_state, "End": True}}}
    print(f"ran: aws --endpoint-url {args.endpoint} stepfunctions create-state-machine "
          f"--name {machine.rsplit(':', 1)[1]} --definition '{json.dumps(definition)}' "
          f"--role-arn arn:aws:iam::000000000000:role/sfn-wasm-host-scripts")

    os.makedirs(args.workdir, exist_ok=True)
    if args.config:
        with open(args.config, "rb") as f:
            config = tomllib.load(f)
        tables = config.get("activity") or config.get("callback")
        if not tables:
            sys.exit(f"error: {args.config} has no [[activity]] or [[callback]] to serve the handler with")
        table = dict(tables[0])
        for key in ("arn", "queue_url", "token", "input", "wait_seconds", "visibility_timeout_seconds"):
            table.pop(key, None)
        config.pop("activity", None)
        config.pop("callback", None)
        config[kind] = [table]
    else:
        config = {kind: [{"workers": 2, "task_timeout_seconds": 60}]}
    config["aws"] = {**config.get("aws", {}), "region": "us-east-1", "endpoint_url": args.endpoint}
    # Locally there is nothing to drain: a long poll would hold the default 30 s grace.
    config["host"] = {"shutdown_grace_seconds": 2, **config.get("host", {})}
    served_table = config[kind][0]
    if args.callback:
        # The whole input is under "input" in the message (the state machine above).
        served_table.update({"queue_url": queue, "input": "/input", "wait_seconds": 1})
    else:
        served_table["arn"] = activity
    served_table["handler"] = os.path.abspath(args.handler)
    config_path = os.path.join(args.workdir, "config.toml")
    with open(config_path, "w") as f:
        f.write(config_text(config))

    log_path = os.path.join(args.workdir, "host.log")
    print(f"ran: {args.host} serve --log-format json {config_path}  (log: {log_path})\n")
    with open(log_path, "w") as log:
        served = subprocess.Popen([args.host, "serve", "--log-format", "json", config_path],
                                  stdout=log, stderr=log)

    def events():
        with open(log_path) as f:
            return [json.loads(line).get("event") for line in f if line.startswith("{")]

    deadline = time.time() + 60
    while "worker:running" not in events():
        if served.poll() is not None or time.time() > deadline:
            print(open(log_path).read(), file=sys.stderr)
            sys.exit(f"error: the host did not start; its log is above ({log_path})")
        time.sleep(0.1)

    failed = 0
    for text in inputs:
        arn = sfn.start_execution(stateMachineArn=machine, input=text)["executionArn"]
        print(f"ran: aws --endpoint-url {args.endpoint} stepfunctions start-execution "
              f"--state-machine-arn {machine} --input '{text}'")
        while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            time.sleep(0.1)
        result = described.get("output") or f'{described.get("error")}: {described.get("cause")}'
        print(f'{described["status"]:9} {text} -> {result}')
        failed += described["status"] != "SUCCEEDED"

    grace = config["host"]["shutdown_grace_seconds"]
    print(f"\nstopping the host (SIGTERM; it waits up to shutdown_grace_seconds = {grace} for polls in flight)")
    served.send_signal(signal.SIGTERM)
    code = served.wait(timeout=60 + grace)
    print(f"\nsfn-wasm-host exited with {code} after SIGTERM")
    sys.exit(1 if failed or code != 0 else 0)


if __name__ == "__main__":
    main()
