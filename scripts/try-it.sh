#!/usr/bin/env bash
# Airflow's four processes run separately, as a deployment runs them, with the bundled emulator standing in for
# OpenAI and moto for S3: no key, no bucket. Run it from a clone, in the environment the provider is installed in.
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null' ERR   # a failed step stops what this script started

# What every process needs alike: the same AIRFLOW_HOME, DAGs folder and API address, and the connections
# (the scheduler, its workers and the triggerer use them; the dag-processor and the API server do not).
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/airflow-home}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$PWD/example_dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__EXECUTOR=LocalExecutor
export API_PORT="${API_PORT:-8080}" EMULATOR_PORT="${EMULATOR_PORT:-8000}" S3_PORT="${S3_PORT:-5000}"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$API_PORT"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AIRFLOW__API__BASE_URL/execution/"
export AIRFLOW_CONN_OPENAI_DEFAULT='{"conn_type": "openai_batch", "password": "sk-emulator",
  "host": "http://127.0.0.1:'"$EMULATOR_PORT"'/v1"}'
export AIRFLOW_CONN_AWS_DEFAULT='{"conn_type": "aws", "login": "testing", "password": "testing",
  "extra": {"endpoint_url": "http://127.0.0.1:'"$S3_PORT"'", "region_name": "us-east-1"}}'
export OPENAI_BATCH_EXAMPLE_POLL_INTERVAL="${OPENAI_BATCH_EXAMPLE_POLL_INTERVAL:-2}"  # the example's default: 60 s
LOGS="$AIRFLOW_HOME/try-it-logs"
mkdir -p "$LOGS"

airflow db migrate > "$LOGS/db-migrate.log"   # first: every other airflow command needs the metadata database

openai-batch-emulator --host 127.0.0.1 --port "$EMULATOR_PORT" > "$LOGS/emulator.log" 2>&1 &
moto_server -H 127.0.0.1 -p "$S3_PORT" > "$LOGS/s3.log" 2>&1 &
python - <<'PY'   # a bucket, and requests for the dates run below: 2026-11-01 to 03, and today
import boto3, datetime, json, os, socket, time
for port in (os.environ["EMULATOR_PORT"], os.environ["S3_PORT"]):
    while socket.socket().connect_ex(("127.0.0.1", int(port))):
        time.sleep(0.2)
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{os.environ['S3_PORT']}", aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
s3.create_bucket(Bucket="my-openai-batches")
today = datetime.datetime.now(datetime.UTC).date().isoformat()
for day in ["2026-11-01", "2026-11-02", "2026-11-03", today]:
    lines = [{"custom_id": f"{day}-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say {i}"}]}}
             for i in range(3)]
    s3.put_object(Bucket="my-openai-batches", Key=f"requests/{day}.jsonl",
                  Body="".join(json.dumps(line) + "\n" for line in lines).encode())
PY
airflow variables set openai_batch_example_base s3://aws_default@my-openai-batches
AIRFLOW__CORE__TEST_CONNECTION=Enabled airflow connections test openai_default

airflow scheduler > "$LOGS/scheduler.log" 2>&1 &       # in a deployment: one terminal, service or pod each
airflow dag-processor > "$LOGS/dag-processor.log" 2>&1 &
airflow triggerer > "$LOGS/triggerer.log" 2>&1 &
airflow api-server --host 127.0.0.1 --port "$API_PORT" --workers 1 > "$LOGS/api-server.log" 2>&1 &
until airflow dags details openai_batch_daily > /dev/null 2>&1; do sleep 2; done   # parsed: created paused

# Runs made while the DAG is paused sit queued; unpausing starts them, and also schedules the latest due run
# (today's: catchup=False runs that one only): one more paid batch.
# SQLite (this recipe's database) lets one writer in at a time: when the scheduler holds it, the create is refused
# with "database is locked" and nothing is made, so it is simply asked again (PostgreSQL has no such wait).
for attempt in 1 2 3 4 5 6; do
  if airflow backfill create --dag-id openai_batch_daily --from-date 2026-11-01 --to-date 2026-11-02; then break; fi
  if [ "$attempt" = 6 ]; then false; fi   # still locked after half a minute: stop here
  sleep 5
done
airflow dags trigger openai_batch_daily --logical-date 2026-11-03   # a manual run needs a logical date
airflow dags unpause openai_batch_daily

python - <<'PY'   # log in as the UI does, then wait for the four runs through the REST API
import json, os, time, urllib.request
api, home = os.environ["AIRFLOW__API__BASE_URL"], os.environ["AIRFLOW_HOME"]
password_file = f"{home}/simple_auth_manager_passwords.json.generated"   # written by the API server
while not os.path.exists(password_file):
    time.sleep(1)
login = {"username": "admin", "password": json.load(open(password_file))["admin"]}
request = urllib.request.Request(f"{api}/auth/token", json.dumps(login).encode(), {"Content-Type": "application/json"})
token = json.load(urllib.request.urlopen(request))["access_token"]
for _ in range(600):
    request = urllib.request.Request(f"{api}/api/v2/dags/openai_batch_daily/dagRuns",
                                     headers={"Authorization": f"Bearer {token}"})
    runs = json.load(urllib.request.urlopen(request))["dag_runs"]
    if len(runs) == 4 and all(run["state"] in ("success", "failed") for run in runs):
        break
    time.sleep(2)
for run in runs:
    print(run["logical_date"][:10], run["run_type"], run["state"])
raise SystemExit(0 if [run["state"] for run in runs] == ["success"] * 4 else 1)
PY

python - <<'PY'   # read a results folder: one record per request
from airflow_provider_openai_batch import read_results
from airflow_provider_openai_batch.reader import text

for record in read_results("s3://aws_default@my-openai-batches/results/2026-11-01/"):
    print(record["custom_id"], record["status_code"], text(record))
PY
echo "UI: $AIRFLOW__API__BASE_URL, user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
echo "Logs: $LOGS. Stop everything: kill $(jobs -p | tr '\n' ' ')"
