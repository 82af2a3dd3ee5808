# bench/lib.sh — what the bench scripts share (sourced, not run).
#
#   STARTED=()              pids (= process groups) of what start_bg started
#   port_busy PORT          true while something listens on 127.0.0.1:PORT
#   wait_port PORT          waits up to 10 s for PORT to listen
#   start_bg NAME PORT CMD...
#                           runs CMD in its own process group (so it and its
#                           children are killed as one), output to $OUT/NAME.out
#                           (or nowhere when OUT is unset); waits for PORT;
#                           exits the script if PORT is taken or never listens.
#                           Sets LASTPID.
#   stop_bg PID             TERM, then KILL after 5 s, the group of PID
#   stop_all                TERM, then KILL, every group start_bg started
#   cpu_model               the CPU's model name, and "PCID" or "no PCID"
#   build_refws OUT         builds bench/refws.c (run.sh's and ab.sh's ref-ws) into OUT

STARTED=()
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The reference WebSocket bridge (docs/PERFORMANCE.md, "The floor of a WebSocket
# bridge"), built the one way its figures were measured.
build_refws() { gcc -O2 -Wall -pthread "$BENCH_DIR/refws.c" -o "$1" -lcrypto; }

# The CPU's model name and whether it offers PCID: this VM's host changes from
# session to session (AMD EPYC without PCID, Intel Xeon with it), and the ratios
# between relays change with it (docs/PERFORMANCE.md, "Another kind of host").
cpu_model() {
    local m
    m=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
    if grep -qw pcid /proc/cpuinfo; then echo "${m:-unknown}, PCID"; else echo "${m:-unknown}, no PCID"; fi
}

port_busy() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }

wait_port() {
    local i
    for i in $(seq 1 100); do port_busy "$1" && return 0; sleep 0.1; done
    return 1
}

start_bg() {
    local name=$1 port=$2 log=/dev/null
    shift 2
    [ -n "${OUT:-}" ] && log="$OUT/$name.out"
    if port_busy "$port"; then echo "port $port busy ($name); set BASE_PORT" >&2; exit 1; fi
    setsid "$@" >>"$log" 2>&1 </dev/null &
    LASTPID=$!
    STARTED+=("$LASTPID")
    wait_port "$port" || { echo "$name did not listen on $port${OUT:+ (see $log)}" >&2; exit 1; }
}

stop_bg() {
    local p=$1 i keep=()
    kill -TERM -- "-$p" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || true
    for i in "${STARTED[@]}"; do [ "$i" != "$p" ] && keep+=("$i"); done
    STARTED=("${keep[@]}")
}

stop_all() {
    local p
    for p in "${STARTED[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${STARTED[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    STARTED=()
    return 0  # a group already gone is not a failure (scripts under set -e)
}
