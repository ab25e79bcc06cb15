"""The local demo: a Step Functions activity served by sfn-wasm-host.

Creates an activity and a state machine in the emulator, writes a config, runs
`sfn-wasm-host serve` on it, starts a few executions, prints their outputs, and shuts
the host down with SIGTERM. Run through scripts/demo.sh, which starts the emulator.
"""

import json
import os
import signal
import subprocess
import sys
import time

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from emulator import activity_and_machine  # noqa: E402

endpoint, host, handler, workdir = sys.argv[1:5]
sfn = boto3.client("stepfunctions", endpoint_url=endpoint)
activity, machine = activity_and_machine(
    sfn, "greet", {"TimeoutSeconds": 120, "HeartbeatSeconds": 60})

os.makedirs(workdir, exist_ok=True)
config = os.path.join(workdir, "config.toml")
with open(config, "w") as f:
    f.write(f"""[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[host]
worker_prefix = "demo"
shutdown_grace_seconds = 5

[[activity]]
arn = "{activity}"
handler = "{os.path.abspath(handler)}"
workers = 2
task_timeout_seconds = 10
memory_limit_mb = 64
""")
print(f"config: {config}")

log_path = os.path.join(workdir, "host.log")
log = open(log_path, "w")
served = subprocess.Popen([host, "serve", "--log-format", "json", config], stdout=log, stderr=log)


def events():
    with open(log_path) as f:
        return [json.loads(line).get("event") for line in f if line.startswith("{")]


deadline = time.time() + 30
while events().count("worker:running") < 2:
    if served.poll() is not None or time.time() > deadline:
        sys.exit(f"the host did not start; see {log_path}")
    time.sleep(0.1)
print(f"serving {activity} with {handler} (log: {log_path})\n")

names = ["World", "Wasm", "Step Functions", "Activity", "Sandbox"]
executions = [
    (name, sfn.start_execution(stateMachineArn=machine, input=json.dumps({"hello": name}))["executionArn"])
    for name in names
]
failed = 0
for name, arn in executions:
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.1)
    result = described.get("output") or f'{described.get("error")}: {described.get("cause")}'
    print(f'{described["status"]:9} {json.dumps({"hello": name}):28} -> {result}')
    failed += described["status"] != "SUCCEEDED"

served.send_signal(signal.SIGTERM)
code = served.wait(timeout=30)
print(f"\nsfn-wasm-host exited with {code} after SIGTERM; "
      f"{events().count('task:success')} tasks answered with task:success")
sys.exit(1 if failed or code != 0 else 0)
