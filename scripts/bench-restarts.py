"""Rolling restarts against the emulator: how many tasks does a SIGTERM strand?

An execution starts every 0.2 s for the whole run, while the host is stopped with SIGTERM
and started again RESTARTS times. The task state retries `States.Timeout` (a task
stranded by a restart: handed to a poll nobody answers, left to its 5 s timeout) and
`SfnWasmHost.Shutdown` (a task the host gave back at once). Prints one table row.
Run through scripts/bench-restarts.sh, which starts the emulator.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from emulator import activity_and_machine  # noqa: E402

endpoint, host, handler, workdir = sys.argv[1:5]
RESTARTS, UP_SECONDS, GRACE = 5, 4.0, 2
sfn = boto3.client("stepfunctions", endpoint_url=endpoint)
retry = {"IntervalSeconds": 1, "MaxAttempts": 5, "BackoffRate": 1.0}
activity, machine = activity_and_machine(sfn, "restarts", {
    "TimeoutSeconds": 5, "HeartbeatSeconds": 4,
    "Retry": [
        {"ErrorEquals": ["States.Timeout"], **retry},
        {"ErrorEquals": ["SfnWasmHost.Shutdown"], **retry},
    ],
})
os.makedirs(workdir, exist_ok=True)
config = os.path.join(workdir, "config.toml")
with open(config, "w") as f:
    f.write(f"""[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[host]
shutdown_grace_seconds = {GRACE}
[[activity]]
arn = "{activity}"
handler = "{os.path.abspath(handler)}"
workers = 2
""")

executions, feeding = [], True


def feed():
    client = boto3.client("stepfunctions", endpoint_url=endpoint)
    while feeding:
        arn = client.start_execution(stateMachineArn=machine, input=json.dumps({"hello": "x"}))
        executions.append(arn["executionArn"])
        time.sleep(0.2)


log = open(os.path.join(workdir, "host.log"), "w")
feeder = threading.Thread(target=feed)
feeder.start()
exits = []
for _ in range(RESTARTS):
    served = subprocess.Popen([host, "serve", "--log-format", "json", config], stdout=log, stderr=log)
    time.sleep(UP_SECONDS)
    started = time.time()
    served.send_signal(signal.SIGTERM)
    served.wait(timeout=120)
    exits.append(time.time() - started)
feeding = False
feeder.join()
# A last host drains what is left.
served = subprocess.Popen([host, "serve", "--log-format", "json", config], stdout=log, stderr=log)
stranded = given_back = succeeded = 0
try:
    for arn in executions:
        while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            time.sleep(0.2)
        succeeded += described["status"] == "SUCCEEDED"
        history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        stranded += sum(e["type"] == "ActivityTimedOut" for e in history)
        given_back += sum(
            e["type"] == "ActivityFailed"
            and e.get("activityFailedEventDetails", {}).get("error") == "SfnWasmHost.Shutdown"
            for e in history)
finally:
    served.send_signal(signal.SIGTERM)
    served.wait(timeout=120)
print("| host | executions | succeeded | stranded (States.Timeout retries) | given back (SfnWasmHost.Shutdown retries) | exit after SIGTERM, median |")
print("|---|---:|---:|---:|---:|---:|")
exits.sort()
print(f"| {host} | {len(executions)} | {succeeded} | {stranded} | {given_back} | {exits[len(exits) // 2]:.2f} s |")
