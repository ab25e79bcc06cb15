"""Host CPU per task against the emulator, start-up included, at 1 and 4 workers.

For each round, each host binary and each worker count: TASKS executions are queued,
then `sfn-wasm-host serve` starts (compile cache warmed beforehand, as in a deploy) and
runs until Step Functions reports every execution SUCCEEDED; it is then stopped with
SIGTERM (grace 0) and its whole CPU time (user + system, from start to exit) is divided
by TASKS. Rounds alternate the binaries so that drift on a noisy machine hits all alike.
Run through scripts/bench-host-cpu.sh, which starts the emulator.
"""

import os
import signal
import statistics
import subprocess
import sys
import time
import json

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from emulator import activity_and_machine  # noqa: E402

endpoint, handler, workdir, *hosts = sys.argv[1:]
# TASKS and ROUNDS may be lowered from the environment, e.g. for a quick profile with a
# wrapper script as HOST_BINARY (`perf record ... -- sfn-wasm-host "$@"`).
TASKS, ROUNDS, WORKERS = int(os.environ.get("TASKS", 300)), int(os.environ.get("ROUNDS", 3)), (1, 4)
sfn = boto3.client("stepfunctions", endpoint_url=endpoint)
os.makedirs(workdir, exist_ok=True)
cache = os.path.abspath(os.path.join(workdir, "cache"))


def config_for(activity, workers):
    path = os.path.join(workdir, "config.toml")
    with open(path, "w") as f:
        f.write(f"""[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[host]
log_format = "json"
shutdown_grace_seconds = 0
cache_dir = "{cache}"
[[activity]]
arn = "{activity}"
handler = "{os.path.abspath(handler)}"
workers = {workers}
""")
    return path


def succeeded(machine):
    pages = sfn.get_paginator("list_executions").paginate(
        stateMachineArn=machine, statusFilter="SUCCEEDED")
    return sum(len(page["executions"]) for page in pages)


def cpu_per_task(host, workers):
    activity, machine = activity_and_machine(
        sfn, "cpu", {"TimeoutSeconds": 300, "HeartbeatSeconds": 60})
    config = config_for(activity, workers)
    subprocess.run([host, "check", config], check=True, capture_output=True)  # warms the cache
    for _ in range(TASKS):
        sfn.start_execution(stateMachineArn=machine, input=json.dumps({"hello": "x"}))
    log = open(os.path.join(workdir, "host.log"), "w")
    served = subprocess.Popen([host, "serve", config], stdout=log, stderr=log)
    deadline = time.time() + 600
    while succeeded(machine) < TASKS:
        if time.time() > deadline or served.poll() is not None:
            sys.exit(f"{host}: the executions did not all succeed; see {log.name}")
        time.sleep(0.5)
    served.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(served.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{host} exited with {status}")
    return (usage.ru_utime + usage.ru_stime) / TASKS * 1000


samples = {(host, workers): [] for host in hosts for workers in WORKERS}
for _ in range(ROUNDS):
    for workers in WORKERS:
        for host in hosts:
            samples[(host, workers)].append(cpu_per_task(host, workers))

print(f"\n{TASKS} queued executions of greet per run, {ROUNDS} rounds; CPU of the whole host "
      "process from start to exit")
print("| host | workers | CPU per task, median | runs | vs the first host |")
print("|---|---:|---:|---|---:|")
for workers in WORKERS:
    base = statistics.median(samples[(hosts[0], workers)])
    for host in hosts:
        runs = samples[(host, workers)]
        median = statistics.median(runs)
        shown = ", ".join(f"{r:.2f}" for r in runs)
        print(f"| {host} | {workers} | {median:.2f} ms | {shown} | {median / base:.2f}x |")
