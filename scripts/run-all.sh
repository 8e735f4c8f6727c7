#!/usr/bin/env bash
# Starts the upstream simulator, llm-log-worker, cache-service, cv-processor and api-gateway in the
# background (debug build, wherever cargo builds: CARGO_TARGET_DIR is honoured), waits
# until they answer, and prints a first request to paste.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=.run
BIN=${BIN_DIR:-$(scripts/target-dir.sh)/debug}
mkdir -p "$RUN_DIR"
scripts/stop-all.sh --quiet

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/headhunter}
export ANALYTICS_DATABASE_URL=${ANALYTICS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/headhunter_analytics}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export ADMIN_API_KEY=${ADMIN_API_KEY:-dev-admin-key}
export LLM_BASE_URL=${LLM_BASE_URL:-http://127.0.0.1:8090/v1}
export LLM_API_KEY=${LLM_API_KEY:-sk-simulated}
export LOG_FORMAT=${LOG_FORMAT:-text}
# cache-service's credential (every service that calls it sends it) and the gateway's
# key for sealing cached LLM answers; random for each local run unless given.
export CACHE_API_KEY=${CACHE_API_KEY:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export LLM_CACHE_SEAL_KEY=${LLM_CACHE_SEAL_KEY:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
# Between the gateway and cv-processor: the gateway's matching calls, and the LLM calls
# cv-processor makes through the gateway in a company's name (analyses).
export INTERNAL_API_KEY=${INTERNAL_API_KEY:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
# Where the gateway and cv-processor keep log events while Redis does not take them:
# one directory each (a spool is locked by its process).
SPOOL_DIR=${SPOOL_DIR:-$PWD/$RUN_DIR/spool}
# Uploaded CV files: written by the gateway, read by cv-processor.
export CVS__STORAGE_DIR=${CVS__STORAGE_DIR:-$PWD/$RUN_DIR/files}
export FILES__STORAGE_DIR=$CVS__STORAGE_DIR
# cv-processor's vectors (embedded engine) and its embedding cache (cache-service).
export VECTORS__DIR=${VECTORS__DIR:-$PWD/$RUN_DIR/vectors}
GATEWAY_PORT=${PORT:-8080}
# The gateway's internal listener: /metrics and the admin routes.
GATEWAY_INTERNAL_PORT=${INTERNAL_PORT:-9080}
WORKER_PORT=${WORKER_PORT:-9091}
CACHE_PORT=${CACHE_PORT:-8081}
CV_PORT=${CV_PORT:-9092}
export CACHE_URL=${CACHE_URL:-http://127.0.0.1:$CACHE_PORT}

start() { # name, command...
  local name=$1; shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  printf '==> %-15s pid %-7s log %s\n' "$name" "$!" "$RUN_DIR/$name.log"
}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

echo "==> applying main database migrations"
"$BIN/api-gateway" migrate

start llm-simulator "$BIN/llm-simulator" --bind 127.0.0.1:8090 --latency-ms "${SIMULATOR_LATENCY_MS:-50}"
PORT=$WORKER_PORT start llm-log-worker "$BIN/llm-log-worker"
PORT=$CACHE_PORT CACHE_ADMIN_API_KEY=${CACHE_ADMIN_API_KEY:-dev-cache-admin-key} start cache-service "$BIN/cache-service"
PORT=$CV_PORT EMBEDDING__CACHE_URL=$CACHE_URL PRODUCER__SPOOL__DIR=$SPOOL_DIR/cv-processor \
  ANALYSIS__GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT \
  start cv-processor "$BIN/cv-processor"
PORT=$GATEWAY_PORT INTERNAL_PORT=$GATEWAY_INTERNAL_PORT CV_PROCESSOR_URL=http://127.0.0.1:$CV_PORT PRODUCER__SPOOL__DIR=$SPOOL_DIR/api-gateway \
  start api-gateway "$BIN/api-gateway"
wait_http llm-simulator http://127.0.0.1:8090/healthz
wait_http cache-service "http://127.0.0.1:$CACHE_PORT/healthz"
wait_http llm-log-worker "http://127.0.0.1:$WORKER_PORT/healthz"
wait_http cv-processor "http://127.0.0.1:$CV_PORT/healthz"
wait_http api-gateway "http://127.0.0.1:$GATEWAY_PORT/healthz"

# A demo company with a month of traffic, for a full dashboard at once (DEMO=0: none).
# Run again the same day, it adds nothing.
if [ "${DEMO:-1}" != 0 ]; then
  echo "==> seeding the demo company (a month of LLM calls, through the queue)"
  "$BIN/api-gateway" demo 2>"$RUN_DIR/demo.log" | sed 's/^/    /'
fi

cat <<MSG

headhunter is running (stop it with: make stop-all)
  api-gateway     http://127.0.0.1:$GATEWAY_PORT   (the API, /healthz /readyz)
                  http://127.0.0.1:$GATEWAY_INTERNAL_PORT   (internal: /metrics, /api/v1/admin/*)
  llm-log-worker  http://127.0.0.1:$WORKER_PORT   (/metrics /healthz /readyz)
  cache-service   http://127.0.0.1:$CACHE_PORT   (/v1/cache/{namespace}/{key}, /v1/stats, /metrics)
  cv-processor    http://127.0.0.1:$CV_PORT   (/metrics /healthz /readyz)
  llm-simulator   http://127.0.0.1:8090/v1   (stands in for the LLM provider)

1. Create a company and keep its API key (shown once) in KEY:

  KEY=\$(curl -s -X POST http://127.0.0.1:$GATEWAY_INTERNAL_PORT/api/v1/admin/companies \\
    -H "Authorization: Bearer $ADMIN_API_KEY" -H 'Content-Type: application/json' \\
    -d '{"name": "Acme Recruiting"}' | sed -E 's/.*"key":"([^"]+)".*/\\1/'); echo "\$KEY"

2. Call the LLM with it (add "stream": true for server-sent events; send the same
   temperature-0 request twice and the second is answered from the cache):

  curl -s http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions \\
    -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -H 'X-Action: cv_summary' \\
    -d '{"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "Hello"}]}'

3. Watch it land in the analytics database and the pipeline's health:

  psql postgres://postgres@127.0.0.1:5432/headhunter_analytics \\
    -c 'SELECT created_at, company_id, model, tokens_used, cost_usd, latency_ms FROM llm_logs ORDER BY created_at DESC LIMIT 5'
  curl -s http://127.0.0.1:$GATEWAY_INTERNAL_PORT/api/v1/admin/health -H "Authorization: Bearer $ADMIN_API_KEY"

4. Upload CVs (PDF, DOCX or text; up to 50 files of 10 MiB a request), then see them
   processed, with their facts and summary:

  curl -s http://127.0.0.1:$GATEWAY_PORT/api/v1/cvs -H "Authorization: Bearer \$KEY" \\
    -F file=@crates/cv-processor/tests/fixtures/one_column.pdf \\
    -F file=@crates/cv-processor/tests/fixtures/two_column.docx
  curl -s "http://127.0.0.1:$GATEWAY_PORT/api/v1/cvs?limit=10" -H "Authorization: Bearer \$KEY"

   Watch CV status changes live (server-sent events) in another terminal:

  curl -N http://127.0.0.1:$GATEWAY_PORT/api/v1/cvs/events -H "Authorization: Bearer \$KEY"

   A job, and its best CVs with the evidence for each requirement:

  JOB=\$(curl -s http://127.0.0.1:$GATEWAY_PORT/api/v1/jobs -H "Authorization: Bearer \$KEY" \\
    -H 'Content-Type: application/json' -d '{"title": "Senior backend engineer",
    "requirements": ["Rust or Go services in production", "PostgreSQL and Kafka", "Kubernetes on AWS"]}' \\
    | sed -E 's/.*"id":([0-9]+).*/\\1/')
  curl -s "http://127.0.0.1:$GATEWAY_PORT/api/v1/jobs/\$JOB/matches?limit=5" -H "Authorization: Bearer \$KEY"

   An application of a processed CV to the job, and the LLM's assessment of it (asked
   through the gateway, so logged and costed; the simulator answers from the schema):

  CV=\$(curl -s "http://127.0.0.1:$GATEWAY_PORT/api/v1/cvs?limit=1" -H "Authorization: Bearer \$KEY" \\
    | sed -E 's/^\{"data":\[\{"id":([0-9]+).*/\1/')
  APP=\$(curl -s http://127.0.0.1:$GATEWAY_PORT/api/v1/applications -H "Authorization: Bearer \$KEY" \\
    -H 'Content-Type: application/json' -d "{\\"job_id\\": \$JOB, \\"cv_id\\": \$CV}" | sed -E 's/^\{"id":([0-9]+).*/\1/')
  curl -s -X POST http://127.0.0.1:$GATEWAY_PORT/api/v1/applications/\$APP/analysis -H "Authorization: Bearer \$KEY"
  curl -s http://127.0.0.1:$GATEWAY_PORT/api/v1/applications/\$APP/analyses -H "Authorization: Bearer \$KEY"

5. People: a company whose owner is invited, accepts with a password (signed in at
   once), signs in again later and reads the audit trail (invitations for others go
   to the email_outbox table; no mail server runs here):

  TOKEN=\$(curl -s -X POST http://127.0.0.1:$GATEWAY_INTERNAL_PORT/api/v1/admin/companies \\
    -H "Authorization: Bearer $ADMIN_API_KEY" -H 'Content-Type: application/json' \\
    -d '{"name": "Beta Hiring", "owner_email": "owner@beta.example.com"}' | sed -E 's/.*"token":"([^"]+)".*/\\1/')
  curl -s -X POST http://127.0.0.1:$GATEWAY_PORT/api/v1/invitations/accept -H 'Content-Type: application/json' \\
    -d "{\\"token\\": \\"\$TOKEN\\", \\"password\\": \\"a long passphrase\\"}"
  SESSION=\$(curl -s -X POST http://127.0.0.1:$GATEWAY_PORT/api/v1/auth/login -H 'Content-Type: application/json' \\
    -d '{"email": "owner@beta.example.com", "password": "a long passphrase"}' | sed -E 's/.*"token":"([^"]+)".*/\\1/')
  curl -s http://127.0.0.1:$GATEWAY_PORT/api/v1/audit -H "Authorization: Bearer \$SESSION"

6. The dashboard (a month of demo traffic; DEMO=0 make run-all seeds none):
   http://127.0.0.1:$GATEWAY_PORT/dashboard          owner@demo.example.com / demo passphrase
   http://127.0.0.1:$GATEWAY_INTERNAL_PORT/admin/dashboard    the operator: the admin key ($ADMIN_API_KEY)

7. Dead letters (entries the worker could not write), and putting them back:

  $BIN/llm-log-worker dead-letters list
  $BIN/llm-log-worker dead-letters replay --all
  $BIN/cv-processor dead-letters list
MSG
