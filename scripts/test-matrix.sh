#!/usr/bin/env bash
# The unit and integration suites on each Airflow minor named, each in its own .venv-<minor>, JOBS at once.
# Usage: scripts/test-matrix.sh JOBS MINOR... (extra pytest arguments in MATRIX_PYTEST_EXTRA).
# With JOBS > 1 each minor's output goes to .matrix/<minor>.log and is printed whole when it ends, so the logs
# never interleave. Two at once suit a 2-core CI machine: a suite keeps one core about 85% busy.
set -u
jobs=$1
shift
mkdir -p .matrix
run() {
  local v=$1
  echo "== Airflow $v ($(.venv-"$v"/bin/python -c 'import airflow; print(airflow.__version__)' 2>/dev/null)): tests/unit tests/integration"
  # shellcheck disable=SC2086
  .venv-"$v"/bin/python -m pytest tests/unit tests/integration -q -m "not system" ${MATRIX_PYTEST_EXTRA:-}
}
declare -A pids=()
failed=""
for v in "$@"; do
  if [ "$jobs" -le 1 ]; then
    run "$v" || failed="$failed $v"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run "$v" >".matrix/$v.log" 2>&1 &
  pids[$v]=$!
done
for v in "$@"; do
  [ -n "${pids[$v]:-}" ] || continue
  wait "${pids[$v]}" || failed="$failed $v"
  cat ".matrix/$v.log"
done
if [ -n "$failed" ]; then
  echo "test-matrix failed on Airflow$failed"
  exit 1
fi
echo "test-matrix passed on Airflow $*"
