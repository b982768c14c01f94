#!/usr/bin/env bash
# Compares qsupervisor with tini and dumb-init on the same machine and run:
#   binary size, RSS while wrapping `sleep`, start-to-exit overhead of `X -- true` against bare
#   `true` (hyperfine), and signal-forwarding latency (SIGUSR1 to the init, the child timestamps
#   its arrival; the baseline sends straight to the child).
# Usage: bench/supervisor.sh [RUNS]   (default 500 runs for hyperfine, 300 signals per init)
# Needs: cargo, and hyperfine, tini, dumb-init, gcc, jq from Debian's packages (installed if missing, as root).
set -euo pipefail

RUNS=${1:-500}
SIGNALS=${SIGNALS:-300}
REPO=$(cd "$(dirname "$0")/.." && pwd)
QS="${CARGO_TARGET_DIR:-$REPO/target}/release/qsupervisor"
WORK=$(mktemp -d /tmp/qsup-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Installs what is missing from Debian's packages (as root), else says what to install.
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }
need hyperfine hyperfine; need tini tini; need dumb-init dumb-init; need cc gcc; need jq jq
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

echo "building: cargo build --release -p qsupervisor" >&2
(cd "$REPO" && cargo build --release -q -p qsupervisor)
echo "building: tests/static-build.sh --release (musl, as in worker images)" >&2
QS_STATIC=$(cd "$REPO" && tests/static-build.sh --release)/qsupervisor
case $QS_STATIC in /*) ;; *) QS_STATIC="$REPO/$QS_STATIC" ;; esac
export RUST_LOG=warn

# name|command prefix (the wrapped command follows)
INITS=(
  "tini|tini --"
  "dumb-init|dumb-init"
  "qsupervisor|$QS --"
  "qsupervisor (sampler off)|$QS --sample-interval 0 --"
  "qsupervisor static (musl)|$QS_STATIC --"
)

size_of() { stat -L -c %s "$(command -v "$1")"; }
ROWS=()

rss_kib() { # RSS of the init while it wraps sleep
  local prefix=$1 pid rss
  $prefix sleep 30 >/dev/null 2>&1 &
  pid=$!
  # Wait until the init has started its child (it then is in its steady state).
  for _ in $(seq 200); do
    [ -n "$(pgrep -P "$pid" sleep || true)" ] && break
    sleep 0.01
  done
  sleep 1.2 # let one sampler period pass, so qsupervisor's RSS includes its agent at work
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$rss"
}

# A tiny C program for the signal timing: `recv FIFO` writes the CLOCK_MONOTONIC time of each SIGUSR1
# from its handler; `send PID FIFO N` sends N signals one at a time and prints median and p99 µs.
cat > "$WORK/sig.c" <<'C'
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
static int out;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void on_usr1(int s) { (void)s; double t = now(); if (write(out, &t, sizeof t) < 0) _exit(1); }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "recv")) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_usr1; sigaction(SIGUSR1, &sa, 0);
    int fd = open(argv[2], O_WRONLY);
    double ready = 0;
    out = fd;
    if (write(out, &ready, sizeof ready) < 0) return 1; /* the sender starts only after this */
    for (;;) pause();
  }
  if (argc == 5 && !strcmp(argv[1], "send")) {
    int pid = atoi(argv[2]), n = atoi(argv[4]); int in = open(argv[3], O_RDONLY);
    double *l = malloc(n * sizeof *l), ready;
    if (read(in, &ready, sizeof ready) != sizeof ready) return 1;
    for (int i = 0; i < n; i++) {
      double t0 = now(), t1; kill(pid, SIGUSR1);
      if (read(in, &t1, sizeof t1) != sizeof t1) return 1;
      l[i] = (t1 - t0) * 1e6;
    }
    qsort(l, n, sizeof *l, cmp);
    printf("%.1f %.1f\n", l[n / 2], l[(int)((n - 1) * 0.99)]);
    return 0;
  }
  return 2;
}
C
cc -O2 -o "$WORK/sig" "$WORK/sig.c"

latency() { # median and p99 microseconds from kill() to the child's handler
  local prefix=$1 fifo="$WORK/fifo.$RANDOM" pid out
  mkfifo "$fifo"
  # shellcheck disable=SC2086
  # shellcheck disable=SC2086
  $prefix "$WORK/sig" recv "$fifo" >/dev/null 2>&1 &
  pid=$!
  out=$("$WORK/sig" send "$pid" "$fifo" "$SIGNALS")
  kill -KILL "$pid" 2>/dev/null || true
  pkill -KILL -f "sig recv $fifo" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$fifo"
  echo "$out"
}

echo "measuring start-to-exit time ($RUNS runs each)" >&2
cmds=("true")
for e in "${INITS[@]}"; do cmds+=("${e#*|} true"); done
hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$WORK/hf.json" "${cmds[@]}" >/dev/null 2>&1 ||
  hyperfine --warmup 20 --runs "$RUNS" --export-json "$WORK/hf.json" "${cmds[@]}" >/dev/null
mean_ms() { jq -r --argjson i "$1" '.results[$i].mean * 1000' "$WORK/hf.json"; }

bare=$(mean_ms 0)
direct=$(latency "")

printf '\n%-26s %12s %10s %12s %14s %14s %16s\n' "init" "size (KiB)" "RSS (KiB)" "run (ms)" "overhead (ms)" "signal p50 µs" "signal p99 µs"
printf '%-26s %12s %10s %12.3f %14s %14s %16s\n' "bare (no init)" "-" "-" "$bare" "0" "${direct% *}" "${direct#* }"
i=1
for e in "${INITS[@]}"; do
  name=${e%%|*}; prefix=${e#*|}
  bin=${prefix%% *}
  size=$(( $(size_of "$bin") / 1024 ))
  rss=$(rss_kib "$prefix")
  ms=$(mean_ms $i)
  lat=$(latency "$prefix")
  over=$(awk -v a="$ms" -v b="$bare" 'BEGIN {printf "%.3f", a - b}')
  printf '%-26s %12s %10s %12.3f %14s %14s %16s\n' "$name" "$size" "$rss" "$ms" "$over" "${lat% *}" "${lat#* }"
  ROWS+=("$name|$size|$rss|$over|${lat% *}")
  i=$((i + 1))
done

echo
echo "ratios against tini (size, RSS, overhead over bare true, signal p50 over direct delivery):"
t_size=""; tini_rss=""; t_over=""; t_lat=""
for r in "${ROWS[@]}"; do
  IFS='|' read -r name size rss over lat <<<"$r"
  if [ "$name" = tini ]; then
    t_size=$size; tini_rss=$rss; t_over=$over
    t_lat=$(awk -v a="$lat" -v b="${direct% *}" 'BEGIN {print a - b}')
  fi
done
for r in "${ROWS[@]}"; do
  IFS='|' read -r name size rss over lat <<<"$r"
  added=$(awk -v a="$lat" -v b="${direct% *}" 'BEGIN {print a - b}')
  awk -v n="$name" -v s="$size" -v ts="$t_size" -v r="$rss" -v tr="$tini_rss" -v o="$over" -v to="$t_over" -v l="$added" -v tl="$t_lat" \
    'function ratio(a, b) { return (b > 0) ? sprintf("%.2fx", a / b) : "-" }
     BEGIN { printf "  %-26s size %7s  RSS %7s  overhead %7s  added signal latency %7s\n", n, ratio(s, ts), ratio(r, tr), ratio(o, to), ratio(l, tl) }'
done
echo
echo "machine: $(nproc) cores, $(uname -r); hyperfine $(hyperfine --version | awk '{print $2}'); tini $(tini --version 2>&1 | awk '{print $3}'); dumb-init $(dumb-init --version 2>&1 | awk '{print $2}')"
