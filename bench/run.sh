#!/usr/bin/env bash
# bench/run.sh — netwine side by side with socat and websockify, in one run.
#
#   bash bench/run.sh                 # about 12 minutes with the defaults
#   REPS=5 PIN=split bash bench/run.sh
#
# What it does: builds netwine and nwbench (release, $BUILD), copies the netwine
# binary aside (a rebuild during the run cannot swap it), builds bench/refrelay.c,
# installs socat/websockify if they are missing (Debian, root), starts nwbench's
# own echo, sink and source targets (`nwbench serve`), netwine, socat, websockify
# and the reference relays once (a second instance of each single-target bridge
# is started for the sink and source tests), and for each rep runs every test on
# every target, rotating the target
# order each rep so that drift hits all alike. Prints a markdown table of
# medians [min-max] and the ratios netwine/socat and netwine/websockify, and
# writes results.txt (one key=value line per run), table.md and logs to $OUT.
#
# Knobs (defaults in brackets):
#   REPS [3]  TPUT_SECS [3] (a WebSocket is lent to a bulk thread after its first
#            ~0.1 s on a loop: a 1 s run weighs that start 3x more)  LAT_SECS [1]  K [500] (idle connections, every bridge)
#   K_WS [10000] (idle WebSocket sessions held by netwine alone: test hold_ws)
#   K_POLL [2000] (idle polling sessions held by netwine: test poll_idle)
#   PIN [none] | split  (split: every bridge on CPU1; client and echo target on CPU0)
#   TARGETS ["raw netwine netwine-1t netwine-loop socat websockify ref-epoll ref-threads
#            ref-ws ref-evhttp netwine-tls netwine-mixed socat-tls websockify-tls"]  (raw: the echo
#            target itself, no relay; netwine-1t: netwine with --threads 1, one event loop (bulk
#            threads still on); netwine-loop: netwine with --bulk-threads 0, every WebSocket on an event loop;
#            ref-*: bench/refrelay.c, a minimal C relay doing the per-byte work a
#            WebSocket bridge must do, on one epoll thread or a thread per direction;
#            ref-ws: bench/refws.c, a minimal WebSocket bridge in C (RFC 6455 framing and
#            unmasking, a blocking thread per direction: the same client as netwine's);
#            ref-evhttp: bench/refpoll.c, a minimal long-polling bridge on one evhttp loop
#            (the polling tests only: what netwine's HTTP server can do at most on one loop);
#            over TLS, with a throwaway P-256 certificate: netwine-tls: wss:// to netwine with
#            --tls-cert/--tls-key (TLS and plain on one port, the usual set-up); netwine-mixed:
#            plain ws:// to that same process; socat-tls: socat OPENSSL-LISTEN, a TLS-terminating
#            plain relay; websockify-tls: websockify --cert. Their table is printed second)
#   TESTS ["tput64k_c1 tput64k_c8 tput1k_c8 up64k_c1 down_c1 lat lat_cpu0 conns hold_ws stream poll_c1 poll_c8 poll_idle"]
#          (up64k_c1: client -> bridge -> sink; down_c1: source -> bridge -> client)
#   STREAM_SEND [256K] (body size of each HTTP send in the streaming test)
#   BUILD [build-bench]  BASE_PORT [19600]  OUT [/tmp/nwbench-<timestamp>]
#   NETWINE [] a netwine binary to measure instead of building the work tree's
#   NETWINE_B [] a second netwine binary, measured as target netwine-b (add it to
#            TARGETS) in the same rotation: an interleaved A/B of two builds
# Loopback only; every client run is capped with -t and `timeout`.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
[ -d "$SHARED_BENCH" ] || SHARED_BENCH=/work/shared/bench
REPS=${REPS:-3}
TPUT_SECS=${TPUT_SECS:-3}
LAT_SECS=${LAT_SECS:-1}
K=${K:-500}
K_WS_WANTED=${K_WS:-10000}
K_POLL=${K_POLL:-2000}
PIN=${PIN:-none}
TARGETS=${TARGETS:-"raw netwine netwine-1t netwine-loop socat websockify ref-epoll ref-threads ref-ws ref-evhttp netwine-tls netwine-mixed socat-tls websockify-tls"}
TESTS=${TESTS:-"tput64k_c1 tput64k_c8 tput1k_c8 up64k_c1 down_c1 lat lat_cpu0 conns hold_ws stream poll_c1 poll_c8 poll_idle"}
STREAM_SEND=${STREAM_SEND:-256K}
BUILD=${BUILD:-build-bench}
BASE=${BASE_PORT:-19600}
OUT=${OUT:-/tmp/nwbench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/nwbench-work.XXXXXX)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Each WebSocket session holds two descriptors (client and target) in netwine's
# one process: hold as many as the descriptor limit allows, and say so.
FD_LIMIT=$(ulimit -n)
K_WS=$K_WS_WANTED
if [ "$FD_LIMIT" != unlimited ] && [ $((2 * K_WS + 100)) -gt "$FD_LIMIT" ]; then
    K_WS=$(((FD_LIMIT - 100) / 2))
fi
NCPU=$(nproc)
ALLCPU="0-$((NCPU - 1))"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt" >&2; }

# ---- build ----
cd "$ROOT" || exit 1
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release >"$OUT/build.log" 2>&1 || { log "meson setup failed: $OUT/build.log"; exit 1; }
fi
if [ -n "${NETWINE:-}" ]; then  # measure a given binary (e.g. another branch's build)
    meson compile -C "$BUILD" nwbench >>"$OUT/build.log" 2>&1 || { log "build failed: $OUT/build.log"; exit 1; }
    cp "$NETWINE" "$WORK/netwine" || exit 1
else
    meson compile -C "$BUILD" netwine nwbench >>"$OUT/build.log" 2>&1 || { log "build failed: $OUT/build.log"; exit 1; }
    cp "$BUILD/netwine" "$WORK/netwine"
fi
cp "$BUILD/bench/nwbench" "$WORK/nwbench"
NWB=$WORK/nwbench
NETWINE=$WORK/netwine

# The reference relay (docs/PERFORMANCE.md, "The floor of a relay on this machine").
if ! gcc -O2 -Wall -pthread "$ROOT/bench/refrelay.c" -o "$WORK/refrelay" >>"$OUT/build.log" 2>&1; then
    log "could not build bench/refrelay.c: $OUT/build.log"
    exit 1
fi
# The reference long-polling bridge on one evhttp loop (docs/PERFORMANCE.md, "What
# one evhttp loop can do"); needs libevent's headers, as netwine's build does.
if ! gcc -O2 -Wall "$ROOT/bench/refpoll.c" -o "$WORK/refpoll" -levent >>"$OUT/build.log" 2>&1; then
    log "could not build bench/refpoll.c: $OUT/build.log"
    exit 1
fi
. "$ROOT/bench/lib.sh"  # build_refws; start_bg, stop_bg, port_busy, wait_port, stop_all
if ! build_refws "$WORK/refws" >>"$OUT/build.log" 2>&1; then
    log "could not build bench/refws.c: $OUT/build.log"
    exit 1
fi

need_pkgs=()
command -v socat >/dev/null || need_pkgs+=(socat)
command -v websockify >/dev/null || need_pkgs+=(websockify)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    (apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}") >>"$OUT/build.log" 2>&1 || log "apt-get failed; those targets will be skipped"
fi

# ---- processes ----
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tree_pids() {
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p"); do tree_pids "$c"; done
}
pin_tree() { local p; for p in $(tree_pids "$1"); do taskset -a -p -c "$2" "$p" >/dev/null 2>&1; done; }
nprocs_group() { pgrep -g "$1" 2>/dev/null | wc -l; }

ECHO=$((BASE + 1)) SINK=$((BASE + 2)) SOURCE=$((BASE + 3))
declare -A PORT URL PROTO PID CMD
PORT[netwine]=$((BASE + 10)) PORT[netwine-1t]=$((BASE + 11)) PORT[netwine-loop]=$((BASE + 12)) PORT[netwine-b]=$((BASE + 13)) PORT[socat]=$((BASE + 20)) PORT[websockify]=$((BASE + 30))
PORT[ref-epoll]=$((BASE + 40)) PORT[ref-threads]=$((BASE + 41)) PORT[ref-evhttp]=$((BASE + 42)) PORT[ref-ws]=$((BASE + 43))
PORT[netwine-tls]=$((BASE + 14)) PORT[netwine-mixed]=$((BASE + 14)) PORT[socat-tls]=$((BASE + 21)) PORT[websockify-tls]=$((BASE + 31))
# The TLS targets' certificate: made here, thrown away with $WORK. nwbench does not
# verify it (loopback only).
HAVE_TLS=false
if command -v openssl >/dev/null &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" \
        -out "$WORK/cert.pem" -days 2 -subj /CN=127.0.0.1 >>"$OUT/build.log" 2>&1; then
    HAVE_TLS=true
fi
# bridge_cmd TARGET LISTEN_PORT TARGET_PORT: the command line of a single-target bridge.
bridge_cmd() {
    case $1 in
    socat) echo "socat -b 262144 TCP-LISTEN:$2,bind=127.0.0.1,fork,backlog=1024,reuseaddr TCP:127.0.0.1:$3" ;;
    websockify) echo "websockify 127.0.0.1:$2 127.0.0.1:$3" ;;
    socat-tls) echo "socat -b 262144 OPENSSL-LISTEN:$2,bind=127.0.0.1,fork,backlog=1024,reuseaddr,cert=$WORK/cert.pem,key=$WORK/key.pem,verify=0 TCP:127.0.0.1:$3" ;;
    websockify-tls) echo "websockify --cert $WORK/cert.pem --key $WORK/key.pem 127.0.0.1:$2 127.0.0.1:$3" ;;
    ref-epoll) echo "$WORK/refrelay $2 $3 epoll" ;;
    ref-threads) echo "$WORK/refrelay $2 $3 threads" ;;
    ref-evhttp) echo "$WORK/refpoll $2" ;;
    ref-ws) echo "$WORK/refws $2 $3" ;;
    esac
}
CMD[netwine]="$NETWINE --listen 127.0.0.1:${PORT[netwine]} --target 127.0.0.1:$ECHO --target 127.0.0.1:$SINK --target 127.0.0.1:$SOURCE --access-log '' --max-sessions-per-client 100000 --max-sessions 100000"
CMD[netwine-1t]="${CMD[netwine]/--listen 127.0.0.1:${PORT[netwine]}/--listen 127.0.0.1:${PORT[netwine-1t]}} --threads 1"
CMD[netwine-loop]="${CMD[netwine]/--listen 127.0.0.1:${PORT[netwine]}/--listen 127.0.0.1:${PORT[netwine-loop]}} --bulk-threads 0"
if [ -n "${NETWINE_B:-}" ]; then
    cp "$NETWINE_B" "$WORK/netwine-b"
    CMD[netwine-b]="$WORK/netwine-b ${CMD[netwine]#"$NETWINE "}"
    CMD[netwine-b]="${CMD[netwine-b]/--listen 127.0.0.1:${PORT[netwine]}/--listen 127.0.0.1:${PORT[netwine-b]}}"
fi
CMD[netwine-tls]="${CMD[netwine]/--listen 127.0.0.1:${PORT[netwine]}/--listen 127.0.0.1:${PORT[netwine-tls]}} --tls-cert $WORK/cert.pem --tls-key $WORK/key.pem"
for t in socat websockify ref-epoll ref-threads ref-ws ref-evhttp socat-tls websockify-tls; do CMD[$t]=$(bridge_cmd "$t" "${PORT[$t]}" "$ECHO"); done
URL[raw]="tcp://127.0.0.1:$ECHO"
URL[netwine]="ws://127.0.0.1:${PORT[netwine]}/netwine/ws?target=127.0.0.1:$ECHO"
URL[netwine-1t]="ws://127.0.0.1:${PORT[netwine-1t]}/netwine/ws?target=127.0.0.1:$ECHO"
URL[netwine-loop]="ws://127.0.0.1:${PORT[netwine-loop]}/netwine/ws?target=127.0.0.1:$ECHO"
URL[netwine-b]="ws://127.0.0.1:${PORT[netwine-b]}/netwine/ws?target=127.0.0.1:$ECHO"
URL[socat]="tcp://127.0.0.1:${PORT[socat]}"
URL[websockify]="ws://127.0.0.1:${PORT[websockify]}/"
URL[ref-epoll]="tcp://127.0.0.1:${PORT[ref-epoll]}" URL[ref-threads]="tcp://127.0.0.1:${PORT[ref-threads]}"
URL[netwine-tls]="wss://127.0.0.1:${PORT[netwine-tls]}/netwine/ws?target=127.0.0.1:$ECHO"
URL[netwine-mixed]="ws://127.0.0.1:${PORT[netwine-tls]}/netwine/ws?target=127.0.0.1:$ECHO"
URL[socat-tls]="tls://127.0.0.1:${PORT[socat-tls]}"
URL[websockify-tls]="wss://127.0.0.1:${PORT[websockify-tls]}/"
PROTO[netwine]=binary PROTO[netwine-1t]=binary PROTO[netwine-loop]=binary PROTO[netwine-b]=binary PROTO[websockify]=binary PROTO[ref-ws]=binary
PROTO[netwine-tls]=binary PROTO[netwine-mixed]=binary PROTO[websockify-tls]=binary
HTTP_URL="http://127.0.0.1:${PORT[netwine]}/netwine/"
URL[ref-evhttp]="http://127.0.0.1:${PORT[ref-evhttp]}/netwine/"
URL[ref-ws]="ws://127.0.0.1:${PORT[ref-ws]}/"

{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm)  cpus: $NCPU  load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu: $(cpu_model)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)')"
    echo "descriptor limit: $FD_LIMIT (K_WS $K_WS of $K_WS_WANTED wanted: two descriptors per WebSocket session)"
    echo "REPS=$REPS TPUT_SECS=$TPUT_SECS LAT_SECS=$LAT_SECS K=$K K_WS=$K_WS K_POLL=$K_POLL PIN=$PIN STREAM_SEND=$STREAM_SEND"
    echo "TARGETS=$TARGETS"
    echo "TESTS=$TESTS"
    echo "socat: $(dpkg-query -W -f='${Version}' socat 2>/dev/null)  websockify: $(dpkg-query -W -f='${Version}' websockify 2>/dev/null)"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

start_bg echo "$ECHO" "$NWB" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
TSPID=$LASTPID
start_bg sink "$SINK" "$NWB" serve --url "tcp://127.0.0.1:$SINK" --kind sink
SINKPID=$LASTPID
start_bg source "$SOURCE" "$NWB" serve --url "tcp://127.0.0.1:$SOURCE" --kind source
SOURCEPID=$LASTPID
ORDER=()
for t in $TARGETS; do
    case $t in
    *-tls | netwine-mixed) $HAVE_TLS || { log "no openssl to make a certificate; $t skipped"; continue; } ;;
    esac
    case $t in
    raw) PID[raw]="" ;;
    socat | websockify | socat-tls | websockify-tls)
        command -v "${t%-tls}" >/dev/null || { log "${t%-tls} missing; $t skipped"; continue; }
        eval "start_bg $t ${PORT[$t]} ${CMD[$t]}"
        PID[$t]=$LASTPID ;;
    netwine-b)
        [ -n "${CMD[netwine-b]:-}" ] || { log "netwine-b needs NETWINE_B; skipped"; continue; }
        eval "start_bg $t ${PORT[$t]} ${CMD[$t]}"
        PID[$t]=$LASTPID ;;
    netwine-mixed)  # plain WebSockets to netwine-tls's own process
        [ -n "${PID[netwine-tls]:-}" ] || { log "netwine-mixed needs netwine-tls before it in TARGETS; skipped"; continue; }
        PID[$t]=${PID[netwine-tls]} ;;
    netwine | netwine-1t | netwine-loop | netwine-tls | ref-epoll | ref-threads | ref-ws | ref-evhttp)
        eval "start_bg $t ${PORT[$t]} ${CMD[$t]}"
        PID[$t]=$LASTPID ;;
    *) log "unknown target $t"; continue ;;
    esac
    ORDER+=("$t")
done

if [ "$PIN" = split ]; then
    pin_tree "$TSPID" 0
    pin_tree "$SINKPID" 0
    pin_tree "$SOURCEPID" 0
    for t in "${ORDER[@]}"; do [ -n "${PID[$t]}" ] && pin_tree "${PID[$t]}" 1; done
    CLIENT_PIN=(taskset -c 0)
else
    CLIENT_PIN=()
fi
restore_pins() { # PID
    if [ "$PIN" = split ]; then
        pin_tree "$TSPID" 0
        [ -n "${1:-}" ] && pin_tree "$1" 1
    else
        pin_tree "$TSPID" "$ALLCPU"
        [ -n "${1:-}" ] && pin_tree "$1" "$ALLCPU"
    fi
}
# A fresh bridge process before measuring memory per connection: heap left over
# from the throughput tests would hide the growth.
restart() { # TARGET
    local t=$1
    stop_bg "${PID[$t]}"
    local i
    for i in $(seq 1 50); do port_busy "${PORT[$t]}" || break; sleep 0.1; done
    eval "start_bg $t ${PORT[$t]} ${CMD[$t]}"
    PID[$t]=$LASTPID
    [ "$t" = netwine-tls ] && [ -n "${PID[netwine-mixed]:-}" ] && PID[netwine-mixed]=$LASTPID
    [ "$PIN" = split ] && pin_tree "$LASTPID" 1
    sleep 0.3
}

# which tests apply to which target
applies() { # TARGET TEST
    case $2 in
    hold_ws | stream | poll_idle) [ "$1" = netwine ] ;;
    poll_c1 | poll_c8) [ "$1" = netwine ] || [ "$1" = netwine-1t ] || [ "$1" = ref-evhttp ] ;;
    conns) [ "$1" != raw ] && [ "$1" != netwine-mixed ] && [ "$1" != ref-evhttp ] ;;  # (conns restarts the bridge: netwine-tls's process)
    *) [ "$1" != ref-evhttp ] ;;  # it speaks only the polling transport
    esac
}

run_test() { # REP TARGET TEST
    local rep=$1 t=$2 test=$3
    local url=${URL[$t]} pid=${PID[$t]:-} pre=("${CLIENT_PIN[@]}") args common=(--label "$t") dirpid=""
    [ -n "${PROTO[$t]:-}" ] && common+=(--proto "${PROTO[$t]}")
    [ -n "$pid" ] && common+=(--pid "$pid")
    case $test in
    tput64k_c1) args=(ws-tput --url "$url" -c 1 -s 64K -t "$TPUT_SECS" --tpid "$TSPID") ;;
    tput64k_c8) args=(ws-tput --url "$url" -c 8 -s 64K -t "$TPUT_SECS" --tpid "$TSPID") ;;
    tput1k_c8) args=(ws-tput --url "$url" -c 8 -s 1K -t "$TPUT_SECS" --tpid "$TSPID") ;;
    up64k_c1 | down_c1)
        # One direction, to the sink or from the source: netwine reaches them by
        # ?target=; the single-target bridges get a second instance for the test.
        local to=$SINK tp=$SINKPID mode=ws-up
        [ "$test" = down_c1 ] && to=$SOURCE tp=$SOURCEPID mode=ws-down
        case $t in
        raw) url="tcp://127.0.0.1:$to" ;;
        netwine | netwine-1t | netwine-loop | netwine-b | netwine-mixed) url="ws://127.0.0.1:${PORT[$t]}/netwine/ws?target=127.0.0.1:$to" ;;
        netwine-tls) url="wss://127.0.0.1:${PORT[$t]}/netwine/ws?target=127.0.0.1:$to" ;;
        *)
            local dport=$((BASE + 60))
            eval "start_bg $t-dir $dport $(bridge_cmd "$t" "$dport" "$to")"
            dirpid=$LASTPID
            pid=$dirpid
            common=(--label "$t" --pid "$pid")
            [ -n "${PROTO[$t]:-}" ] && common+=(--proto "${PROTO[$t]}")
            [ "$PIN" = split ] && pin_tree "$pid" 1
            case $t in
            websockify | ref-ws) url="ws://127.0.0.1:$dport/" ;;
            websockify-tls) url="wss://127.0.0.1:$dport/" ;;
            socat-tls) url="tls://127.0.0.1:$dport" ;;
            *) url="tcp://127.0.0.1:$dport" ;;
            esac ;;
        esac
        args=($mode --url "$url" -c 1 -s 64K -t "$TPUT_SECS" --tpid "$tp") ;;
    lat) args=(ws-lat --url "$url" -s 32 -t "$LAT_SECS") ;;
    lat_cpu0)
        pin_tree "$TSPID" 0
        [ -n "$pid" ] && pin_tree "$pid" 0
        pre=(taskset -c 0)
        args=(ws-lat --url "$url" -s 32 -t "$LAT_SECS") ;;
    conns)
        restart "$t"
        pid=${PID[$t]}
        common=(--label "$t" --pid "$pid")
        [ -n "${PROTO[$t]:-}" ] && common+=(--proto "${PROTO[$t]}")
        args=(ws-conns --url "$url" -k "$K" --par 32 --hold 0.2 -t 60) ;;
    hold_ws)  # the issue's 10,000 idle WebSocket sessions (websockify would need ~35 GB for them)
        restart "$t"
        pid=${PID[$t]}
        common=(--label "$t" --pid "$pid")
        [ -n "${PROTO[$t]:-}" ] && common+=(--proto "${PROTO[$t]}")
        args=(ws-conns --url "$url" -k "$K_WS" --par 64 --hold 0.5 -t 100) ;;
    stream) args=(stream-tput --url "$HTTP_URL" --target "127.0.0.1:$ECHO" -s "$STREAM_SEND" -t "$TPUT_SECS" --tpid "$TSPID") ;;
    poll_c1 | poll_c8)
        local http_url=$HTTP_URL
        [ "$t" = ref-evhttp ] && http_url=$url
        [ "$t" = netwine-1t ] && http_url="http://127.0.0.1:${PORT[netwine-1t]}/netwine/"
        args=(poll-rtt --url "$http_url" --target "127.0.0.1:$ECHO" -c "${test#poll_c}" -t "$LAT_SECS") ;;
    poll_idle)
        restart "$t"
        pid=${PID[$t]}
        common=(--label "$t" --pid "$pid")
        args=(poll-idle --url "$HTTP_URL" --target "127.0.0.1:$ECHO" -k "$K_POLL" --par 32 --hold 0.5 -t 100) ;;
    esac
    local n0=0
    [ -n "$pid" ] && n0=$(nprocs_group "$pid")
    local out rc
    # TCP segments sent machine-wide during the test (nstat, iproute2): a count the
    # host's noise does not move, to compare the packets relays cause per byte.
    $HAVE_NSTAT && nstat -n >/dev/null 2>&1
    out=$("${pre[@]}" timeout 120 "$NWB" "${args[@]}" "${common[@]}" 2>>"$OUT/client.err")
    rc=$?
    [ -z "$out" ] && out="ok=0 error=rc$rc"
    $HAVE_NSTAT && out="$out tcp_out_segs=$(nstat TcpOutSegs 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}')"
    echo "rep=$rep target=$t test=$test rc=$rc $out" >>"$OUT/results.txt"
    printf '  %-10s %-10s rc=%d %s\n' "$t" "$test" "$rc" \
        "$(printf '%s' "$out" | grep -oE '(MBps|p50_us|p99_us|connps|sessps|rtps|kb_per_conn|tree_pss_kb_per_conn|error)=[^ ]*' | tr '\n' ' ')" >&2
    [ "$test" = lat_cpu0 ] && restore_pins "$pid"
    if [ -n "$dirpid" ]; then  # the one-direction test's own bridge instance
        stop_bg "$dirpid"
        pid=""
    fi
    # fork-per-connection bridges: let the children go before the next test
    if [ -n "$pid" ]; then
        local i
        for i in $(seq 1 100); do [ "$(nprocs_group "$pid")" -le "$n0" ] && break; sleep 0.1; done
    fi
    sleep 0.2
}

HAVE_NSTAT=false
command -v nstat >/dev/null && HAVE_NSTAT=true
T0=$(date +%s)
for rep in $(seq 1 "$REPS"); do
    n=${#ORDER[@]}
    rot=$(((rep - 1) % n))
    ord=("${ORDER[@]:$rot}" "${ORDER[@]:0:$rot}")
    for test in $TESTS; do
        log "rep $rep/$REPS $test"
        for t in "${ord[@]}"; do
            applies "$t" "$test" || continue
            if [ -n "${PID[$t]:-}" ] && ! kill -0 "${PID[$t]}" 2>/dev/null; then
                log "$t died; skipping"
                continue
            fi
            run_test "$rep" "$t" "$test"
        done
    done
done
log "done in $(($(date +%s) - T0)) s"
python3 "$ROOT/bench/summarize.py" "$OUT/results.txt" --meta "$OUT/meta.txt" | tee "$OUT/table.md"
echo "results: $OUT/results.txt  table: $OUT/table.md  log: $OUT/log.txt" >&2
