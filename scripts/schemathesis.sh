#!/usr/bin/env bash
# Tests the running gateway against its own OpenAPI document with schemathesis: no
# answer may be a 5xx, and every answer must match the document (status, schema,
# content type). Starts what the gateway needs on ports of its own (the LLM simulator,
# cv-processor, api-gateway), on databases and a Redis key prefix of its own, makes a
# company through the admin API, accepts its owner's invitation for a session, and
# runs schemathesis signed in as that owner.
#
#   SCHEMATHESIS_EXAMPLES  test cases per operation and phase (default 100)
#   SCHEMATHESIS_SEED      a seed, to repeat a run
#   SCHEMATHESIS_CHECKS    the checks (default: no 5xx; status, content type, headers
#                          and schema as documented)
#   SCHEMATHESIS_KEEP=1    keep the run's databases and Redis keys afterwards
#
# Left out of the run:
#   GET /api/v1/cvs/events      server-sent events: the stream never ends, schemathesis
#                               would only time out on it
#   POST /api/v1/auth/logout    they end the session the run signs in with (every later
#   POST /api/v1/auth/logout-all  request would be a 401); the Rust tests cover them
#   POST /api/v1/me/password    the same: a successful change ends every session
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=.run/schemathesis
VENV=${SCHEMATHESIS_VENV:-.venv/schemathesis}
SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-100}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}
GATEWAY_PORT=${SCHEMATHESIS_PORT:-18080}
INTERNAL_PORT=${SCHEMATHESIS_INTERNAL_PORT:-19080}
SIM_PORT=${SCHEMATHESIS_SIM_PORT:-18090}
CV_PORT=${SCHEMATHESIS_CV_PORT:-19092}
MAIN_DB=headhunter_schemathesis
ANALYTICS_DB=headhunter_schemathesis_analytics
PG=postgres://postgres@${PG_HOST:-127.0.0.1}:${PG_PORT:-5432}

say() { printf '==> %s\n' "$*"; }

# schemathesis, from PyPI into a virtual environment (once).
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

scripts/ensure-services.sh
scripts/fetch-model.sh
say "building api-gateway, cv-processor, llm-log-worker and llm-simulator"
cargo build -q -p api-gateway -p cv-processor -p llm-log-worker -p llm-simulator --bins
BIN=$(scripts/target-dir.sh)/debug

say "fresh databases $MAIN_DB and $ANALYTICS_DB"
for db in "$MAIN_DB" "$ANALYTICS_DB"; do
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  psql "$PG/postgres" -qc "CREATE DATABASE \"$db\""
done

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
pids=()
# On the way out: the services stop, and their databases and Redis keys go (kept with
# SCHEMATHESIS_KEEP=1, to look at what a failing run left).
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ "${SCHEMATHESIS_KEEP:-0}" = 1 ] && return
  for db in "$MAIN_DB" "$ANALYTICS_DB"; do
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  done
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_KEY_PREFIX*" | xargs -r redis-cli -u "$REDIS_URL" DEL >/dev/null || true
  fi
}
trap stop EXIT

export DATABASE_URL=$PG/$MAIN_DB
export ANALYTICS_DATABASE_URL=$PG/$ANALYTICS_DB
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export REDIS_KEY_PREFIX="schemathesis-$$:"
export ADMIN_API_KEY=schemathesis-admin-key
export LLM_BASE_URL=http://127.0.0.1:$SIM_PORT/v1
export LLM_API_KEY=sk-simulated
export LOG_FORMAT=text
export CVS__STORAGE_DIR=$PWD/$RUN_DIR/files
export FILES__STORAGE_DIR=$CVS__STORAGE_DIR
export VECTORS__DIR=$PWD/$RUN_DIR/vectors
export CACHE_URL=""
export EMBEDDING__CACHE_URL=""

start() { # name, command...
  local name=$1; shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  pids+=("$!")
}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

"$BIN/api-gateway" migrate >"$RUN_DIR/migrate.log" 2>&1
# The analytics routes read the rollup tables the worker's migrations create.
"$BIN/llm-log-worker" migrate >>"$RUN_DIR/migrate.log" 2>&1
start llm-simulator "$BIN/llm-simulator" --bind "127.0.0.1:$SIM_PORT" --latency-ms 5
PORT=$CV_PORT PRODUCER__SPOOL__DIR=$PWD/$RUN_DIR/spool/cv-processor start cv-processor "$BIN/cv-processor"
PORT=$GATEWAY_PORT INTERNAL_PORT=$INTERNAL_PORT CV_PROCESSOR_URL=http://127.0.0.1:$CV_PORT \
  PRODUCER__SPOOL__DIR=$PWD/$RUN_DIR/spool/api-gateway start api-gateway "$BIN/api-gateway"
wait_http llm-simulator "http://127.0.0.1:$SIM_PORT/healthz" 300
wait_http cv-processor "http://127.0.0.1:$CV_PORT/healthz" 300
wait_http api-gateway "http://127.0.0.1:$GATEWAY_PORT/healthz" 300

API=http://127.0.0.1:$GATEWAY_PORT
ADMIN=http://127.0.0.1:$INTERNAL_PORT
json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

say "making a company and signing in as its owner"
company=$(curl -fsS -X POST "$ADMIN/api/v1/admin/companies" -H "Authorization: Bearer $ADMIN_API_KEY" \
  -H 'Content-Type: application/json' -d '{"name": "Schemathesis Ltd", "owner_email": "owner@schemathesis.example.com"}')
company_id=$(json_field "['company']['id']" <<<"$company")
invitation=$(json_field "['owner_invitation']['token']" <<<"$company")
# Fuzzing sends bursts; the rate limits have tests of their own.
curl -fsS -o /dev/null -X PATCH "$ADMIN/api/v1/admin/companies/$company_id" -H "Authorization: Bearer $ADMIN_API_KEY" \
  -H 'Content-Type: application/json' -d '{"plan": "unlimited"}'
grant=$(curl -fsS -X POST "$API/api/v1/invitations/accept" -H 'Content-Type: application/json' \
  -d "{\"token\": \"$invitation\", \"password\": \"schemathesis passphrase\"}")
session=$(json_field "['token']" <<<"$grant")
owner=$(json_field "['user_id']" <<<"$grant")
# Something for the operations to find (the document's example id is 1, the first of
# each kind in these fresh databases): a job, two CVs, an application, an interview with
# feedback, an invitation.
call() { # method, path, JSON body
  curl -fsS -o /dev/null -X "$1" "$API$2" -H "Authorization: Bearer $session" -H 'Content-Type: application/json' -d "$3"
}
call POST /api/v1/jobs '{"title": "Backend engineer", "requirements": ["Rust services in production", "PostgreSQL"]}'
printf 'Ada Lovelace\nBackend engineer: Rust services in production, PostgreSQL.\n' >"$RUN_DIR/cv-1.txt"
printf 'Grace Hopper\nCompiler engineer: Rust, PostgreSQL, Kubernetes.\n' >"$RUN_DIR/cv-2.txt"
curl -fsS -o /dev/null "$API/api/v1/cvs" -H "Authorization: Bearer $session" \
  -F "file=@$RUN_DIR/cv-1.txt" -F "file=@$RUN_DIR/cv-2.txt"
# CV 2 applies: the example id 1 is the one DELETE /api/v1/cvs/{id} removes (with its
# applications), and the application and its interview should outlive that.
call POST /api/v1/applications '{"job_id": 1, "cv_id": 2}'
call POST /api/v1/applications/1/interviews "{\"scheduled_at\": \"2030-01-15T10:00:00Z\", \"participants\": [$owner]}"
call POST /api/v1/interviews/1/feedback '{"rating": 4, "recommendation": "yes", "comments": "Clear on PostgreSQL."}'
call POST /api/v1/invitations '{"email": "recruiter@schemathesis.example.com", "role": "recruiter"}'

say "schemathesis: $EXAMPLES examples per operation"
seed=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && seed=(--seed "$SCHEMATHESIS_SEED")
# One worker: schemathesis's workers are threads, and under CPython 3.11 two threads
# parsing Python source at once (hypothesis describes its filters that way) can trip
# the interpreter's AST bookkeeping ("AST constructor recursion depth mismatch"): a
# crash of the tool on the same operation in both tries, not a finding about the API.
run_schemathesis() {
  "$VENV/bin/schemathesis" run "$API/api/v1/openapi.json" \
    --header "Authorization: Bearer $session" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" \
    --exclude-path /api/v1/cvs/events \
    --exclude-path /api/v1/auth/logout \
    --exclude-path /api/v1/auth/logout-all \
    --exclude-path /api/v1/me/password \
    --generation-with-security-parameters false \
    --generation-database none \
    --request-timeout 30 \
    --workers 1 \
    --no-color \
    --report junit --report-junit-path "$RUN_DIR/junit.xml" \
    "${seed[@]}"
}

# Whether the report holds errors of schemathesis's own (a crash while generating
# cases) and no failed check.
only_tool_errors() {
  python3 - "$RUN_DIR/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
failures = sum(case.find("failure") is not None for case in cases)
errors = sum(case.find("error") is not None for case in cases)
sys.exit(0 if errors and not failures else 1)
PY
}

set +e
run_schemathesis
result=$?
# A crash inside schemathesis is not a finding about the API: the run is made once more,
# and whatever that run says stands (a failed check never gets a second run).
if [ "$result" -ne 0 ] && only_tool_errors; then
  say "schemathesis errored itself (no check failed); running it once more"
  run_schemathesis
  result=$?
fi
set -e

# What the gateway answered, by route and status (its own count, from /metrics).
echo
say "answers by route and status"
curl -fsS "$ADMIN/metrics" | python3 -c '
import re, sys, collections
counts = collections.defaultdict(dict)
for line in sys.stdin:
    m = re.match(r"headhunter_gateway_http_requests_total\{(.*)\} (\d+)", line)
    if m:
        labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1)))
        counts[labels["method"] + " " + labels["route"]][labels["status"]] = int(m.group(2))
for route in sorted(counts):
    print("  %-52s %s" % (route, "  ".join("%s:%d" % kv for kv in sorted(counts[route].items()))))
'
# One line a CI log reader understands: operations, as schemathesis's JUnit report has them.
python3 - "$RUN_DIR/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
failed = passed = 0
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    else:
        passed += 1
print(f"schemathesis: {passed} passed, {failed} failed")
PY
exit $result
