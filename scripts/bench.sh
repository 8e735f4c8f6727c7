#!/usr/bin/env bash
# make bench: ingest throughput vs raw COPY, the producer's spool, gateway overhead vs
# the upstream alone, what the session check and rate limiter add, cache-service GET vs
# Redis GET, CVs end to end, a main-DB endpoint's p99 under LLM and CV load, and the
# analytics dashboard's queries from the rollups vs from raw rows, and the legacy move
# vs raw COPY.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v oha >/dev/null 2>&1; then
  echo "==> installing oha (HTTP load generator) from crates.io"
  cargo +stable install oha --locked
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk (Debian package)"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi
fi
cargo build --release -p bench
BIN=$(scripts/target-dir.sh)/release
"$BIN/headhunter-bench" ingest --events "${BENCH_EVENTS:-200000}" --rounds "${BENCH_INGEST_ROUNDS:-5}"
echo
"$BIN/headhunter-bench" ingest --events "${BENCH_EVENTS:-200000}" --calls-per-interview 20 \
  --rounds "${BENCH_INGEST_ROUNDS:-5}"
echo
"$BIN/headhunter-bench" spool --events "${BENCH_SPOOL_EVENTS:-200000}"
echo
"$BIN/headhunter-bench" gateway --rate "${BENCH_RATE:-1000}" --seconds "${BENCH_SECONDS:-15}" --bin-dir "$BIN"
echo
"$BIN/headhunter-bench" access --rate "${BENCH_ACCESS_RATE:-2000}" --seconds "${BENCH_ACCESS_SECONDS:-10}" --bin-dir "$BIN"
echo
"$BIN/headhunter-bench" cache --connections "${BENCH_CONNECTIONS:-64}" --seconds "${BENCH_CACHE_SECONDS:-5}" \
  --rounds "${BENCH_CACHE_ROUNDS:-5}" --bin-dir "$BIN"
echo
"$BIN/headhunter-bench" cvs --cvs "${BENCH_CVS:-1000}" --uploads "${BENCH_CV_UPLOADS:-1000}" --bin-dir "$BIN" \
  --model-dir "${EMBEDDING__MODEL_DIR:-.models/all-minilm-l6-v2}"
echo
"$BIN/headhunter-bench" isolation --llm-rate "${BENCH_LLM_RATE:-5000}" --seconds "${BENCH_ISOLATION_SECONDS:-20}" \
  --cvs "${BENCH_ISOLATION_CVS:-300}" --bin-dir "$BIN" --model-dir "${EMBEDDING__MODEL_DIR:-.models/all-minilm-l6-v2}"
echo
"$BIN/headhunter-bench" analytics --rows "${BENCH_ANALYTICS_ROWS:-10000000}" --rounds "${BENCH_ANALYTICS_ROUNDS:-20}"
echo
"$BIN/headhunter-bench" legacy --rows "${BENCH_LEGACY_ROWS:-1000000}"
