#!/usr/bin/env python3
"""Shows the two LocalStack races `scripts/lib/localstack_main.py` fixes, then that they are fixed.

Usage: .venv/localstack/bin/python scripts/check-localstack-races.py [EXECUTIONS]
(after `scripts/test.sh` or `scripts/demo.sh` has made the venv; default 400 executions).

Each race's window is a few instructions wide, so this widens both with a sleep inside them
(a `sitecustomize` on LocalStack's path): 20 ms between queueing an activity task and
registering its endpoint, 0 to 40 ms between storing an execution and giving it a worker.
Then, against LocalStack started plainly and through the fixes in turn, four workers poll and
answer while executions start at a trickle (8 starters, each waiting 0 to 2 s before its
start). It prints, for each, how the executions ended and what `GetActivityTask` answered.
A lost task shows as a `FAILED` execution beside a `GetActivityTask` refused with
`InvalidToken` (race 1) or `InternalError` (race 2).
"""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WIDEN = '''
import random, time
from localstack.services.stepfunctions.asl.eval.callback import callback
from localstack.services.stepfunctions.backend import execution
_init = callback.ActivityCallbackEndpoint.__init__
def _slow_init(self, *a, **k):
    time.sleep(0.02)
    _init(self, *a, **k)
callback.ActivityCallbackEndpoint.__init__ = _slow_init
_worker = execution.Execution._get_start_execution_worker
def _slow_worker(self):
    time.sleep(random.random() * 0.04)
    return _worker(self)
execution.Execution._get_start_execution_worker = _slow_worker
'''


def start_localstack(fixed, widen_dir, log):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    state = tempfile.mkdtemp(prefix="localstack-races-")
    launcher = [os.path.join(ROOT, "scripts/lib/localstack_main.py")] if fixed else [
        "-m", "localstack.runtime.main"]
    env = dict(os.environ, PYTHONPATH=widen_dir, TMPDIR=state, GATEWAY_SERVER="hypercorn",
               GATEWAY_LISTEN=f"127.0.0.1:{port}", SERVICES="stepfunctions,sts",
               EAGER_SERVICE_LOADING="1", DNS_ADDRESS="0", DISABLE_EVENTS="1",
               SKIP_SSL_CERT_DOWNLOAD="1", LOCALSTACK_VOLUME_DIR=os.path.join(state, "volume"))
    process = subprocess.Popen([sys.executable, *launcher], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            health = json.load(urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2))
            if health["services"].get("stepfunctions") == "running":
                return process, endpoint
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit("LocalStack did not start")


def run(endpoint, executions):
    sfn = boto3.client("stepfunctions", endpoint_url=endpoint)
    name = f"races-{random.getrandbits(32):08x}"
    activity = sfn.create_activity(name=name)["activityArn"]
    task = {"Type": "Task", "Resource": activity, "TimeoutSeconds": 30, "HeartbeatSeconds": 20,
            "End": True}
    machine = sfn.create_state_machine(
        name=name, roleArn="arn:aws:iam::000000000000:role/races",
        definition=json.dumps({"StartAt": "Work", "States": {"Work": task}}))["stateMachineArn"]
    polls = Counter()
    stop = threading.Event()

    def work():
        # No retries: a refused GetActivityTask is counted, not hidden behind the next poll.
        client = boto3.client("stepfunctions", endpoint_url=endpoint,
                              config=Config(retries={"total_max_attempts": 1}))
        while not stop.is_set():
            try:
                got = client.get_activity_task(activityArn=activity, workerName="races")
                polls["answered"] += 1
                if got.get("taskToken"):
                    client.send_task_success(taskToken=got["taskToken"], output="{}")
            except ClientError as error:
                polls[error.response["Error"]["Code"]] += 1
            except BotoCoreError:
                return  # LocalStack stopped under a long poll.

    def start(_):
        time.sleep(random.random() * 2)
        client = boto3.client("stepfunctions", endpoint_url=endpoint)
        return client.start_execution(stateMachineArn=machine, input="{}")["executionArn"]

    workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    with ThreadPoolExecutor(8) as starters:
        arns = list(starters.map(start, range(executions)))
    deadline = time.monotonic() + 60
    while True:
        ended = Counter(sfn.describe_execution(executionArn=arn)["status"] for arn in arns)
        if not ended["RUNNING"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    stop.set()
    return ended, polls


def main():
    executions = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                      AWS_DEFAULT_REGION="us-east-1")
    with tempfile.TemporaryDirectory() as widen_dir:
        with open(os.path.join(widen_dir, "sitecustomize.py"), "w") as file:
            file.write(WIDEN)
        for fixed in (False, True):
            with tempfile.TemporaryFile() as log:
                process, endpoint = start_localstack(fixed, widen_dir, log)
                try:
                    ended, polls = run(endpoint, executions)
                    label = "fixed" if fixed else "plain"
                    print(f"{label}: executions {dict(ended)}; GetActivityTask {dict(polls)}",
                          flush=True)
                finally:
                    process.terminate()
                    try:
                        process.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()


if __name__ == "__main__":
    main()
