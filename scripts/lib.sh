# Shell helpers the local scripts share (sourced, not run).

# wait_http NAME URL [TRIES]: waits until URL answers 2xx, polling every 0.2 s up to
# TRIES times (150: 30 s); otherwise prints the end of $RUN_DIR/NAME.log and exits 1.
wait_http() {
  local tries=${3:-150}
  for _ in $(seq 1 "$tries"); do
    curl -fsS -o /dev/null "$2" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$1 did not come up; last lines of its log:" >&2
  tail -n 20 "$RUN_DIR/$1.log" >&2
  exit 1
}
