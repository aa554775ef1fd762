#!/bin/bash
# smtpgate soak: hours of mixed traffic through smtpgate in front of
# smtp-sink, sampling its RSS, goroutines and file descriptors every
# INTERVAL seconds into a CSV and drawing them as an SVG. A flat curve
# means no leak.
#
#   integration/bench/soak.sh                 30 minutes
#   QUICK=1 integration/bench/soak.sh         2 minutes
#   DURATION=2h OUT=docs integration/bench/soak.sh
#
# Traffic, all at once: accepted messages (smtp-source -s 10 -l 4096),
# refused ones (relay denied, unknown sender domain), 5 MB messages, and
# swaks sessions over STARTTLS, plain and with SMTP AUTH (relayed).
# Output: OUT/soak.csv and OUT/soak.svg (OUT defaults to the temp dir,
# which is kept and printed). At the end it prints the number of error
# log lines (there should be none) and the first and last samples.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PATH=$PATH:/usr/sbin
DURATION=${DURATION:-$([ "${QUICK:-0}" = 1 ] && echo 2m || echo 30m)}
INTERVAL=${INTERVAL:-5}
secs=$(( $(echo "$DURATION" | sed 's/h$/*3600/; s/m$/*60/; s/s$//') ))

tmp=$(mktemp -d /tmp/smtpgate-soak.XXXXXX)
OUT=${OUT:-$tmp}
mkdir -p "$OUT"
pids=()
cleanup() {
	touch "$tmp/stop"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

(cd "$root" && go build -o "$tmp/smtpgate" ./cmd/smtpgate && go build -o "$tmp/dnsd" ./integration/bench/dnsd && go build -o "$tmp/plot" ./integration/bench/plot)
"$tmp/dnsd" >"$tmp/dnsd.addr" & pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/dnsd.addr" ] && break; sleep 0.05; done
sinkport=$(freeport) gateport=$(freeport) pprof=127.0.0.1:$(freeport)
smtp-sink -C -F -u nobody -m 2000 127.0.0.1:$sinkport 2000 2>"$tmp/sink.log" & pids+=($!)
waitport $sinkport
# TLS and SMTP AUTH: a self-signed certificate, one user, and a submission
# listener beside the MX one (which offers STARTTLS too).
subport=$(freeport)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=gw.example.com \
	-keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
echo "alice:$(echo soak-secret | "$tmp/smtpgate" passwd -cost 4)" >"$tmp/users"
echo "alice@example.com alice" >"$tmp/senders"
cat >"$tmp/gate.yaml" <<CFG
hostname: gw.example.com
listen:
  - address: 127.0.0.1:$gateport
  - address: 127.0.0.1:$subport
    mode: submission
tls:
  cert_file: $tmp/cert.pem
  key_file: $tmp/key.pem
auth:
  users_file: $tmp/users
  sender_login_maps: $tmp/senders
upstream:
  address: 127.0.0.1:$sinkport
  timeout: 60s
domains: [example.com]
dns:
  servers: [$(cat "$tmp/dnsd.addr")]
  timeout: 2s
CFG
SMTPGATE_PPROF=$pprof "$tmp/smtpgate" -config "$tmp/gate.yaml" >"$tmp/gate.log" 2>&1 & gatepid=$!; pids+=($gatepid)
waitport $gateport

src() { smtp-source -M client.example.org "$@" 127.0.0.1:$gateport >/dev/null 2>>"$tmp/source.err" || true; }
loop() { while [ ! -e "$tmp/stop" ]; do "$@"; done; }
loop src -s 10 -l 4096 -m 2000 -f sender@example.org -t rcpt@example.com & pids+=($!)
loop src -A -s 2 -m 200 -f sender@example.org -t someone@example.net & pids+=($!)           # relay denied
loop src -A -s 2 -m 200 -f sender@nxdomain.invalid -t rcpt@example.com & pids+=($!)         # unknown sender domain
loop src -s 1 -l 5242880 -m 2 -f sender@example.org -t rcpt@example.com & pids+=($!)        # 5 MB
sw() { swaks --silent 2 --timeout 30 "$@" >/dev/null 2>>"$tmp/swaks.err" || true; }
loop sw --server 127.0.0.1:$subport --tls --auth PLAIN --auth-user alice --auth-password soak-secret \
	--from alice@example.com --to friend@example.net & pids+=($!)                        # TLS + AUTH, relayed
loop sw --server 127.0.0.1:$gateport --tls --from sender@example.org --to rcpt@example.com & pids+=($!)  # STARTTLS on the MX port

echo "seconds,RSS MB,goroutines,open fds" >"$OUT/soak.csv"
echo "soak: $DURATION, sampling every ${INTERVAL}s into $OUT/soak.csv" >&2
start=$(date +%s)
while :; do
	now=$(( $(date +%s) - start ))
	rss=$(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$gatepid/status)
	curl -s -o "$tmp/goroutines" "http://$pprof/debug/pprof/goroutine?debug=1" || true
	gor=$(sed -n '1s/.*total //p' "$tmp/goroutines")
	fds=$(ls /proc/$gatepid/fd | wc -l)
	echo "$now,$rss,$gor,$fds" >>"$OUT/soak.csv"
	[ "$now" -ge "$secs" ] && break
	sleep "$INTERVAL"
done
touch "$tmp/stop"
sleep 1
"$tmp/plot" -in "$OUT/soak.csv" -out "$OUT/soak.svg" -title "smtpgate soak, $DURATION, $(date -u +%Y-%m-%d), $(nproc) cores"
accepted=$(grep -c 'msg=accept ' "$tmp/gate.log" || true)
authed=$(grep -c 'msg=auth ' "$tmp/gate.log" || true)
rejected=$(grep -c 'msg=reject ' "$tmp/gate.log" || true)
errors=$(grep -c 'level=ERROR' "$tmp/gate.log" || true)
warns=$(grep 'level=WARN' "$tmp/gate.log" | grep -vc 'serving pprof' || true)
echo "soak: accepted $accepted (of them after AUTH over TLS: $authed), rejected $rejected, error lines $errors, warning lines $warns"
echo "soak: first sample $(sed -n 2p "$OUT/soak.csv"), last $(tail -1 "$OUT/soak.csv") (seconds,RSS MB,goroutines,fds)"
echo "soak: $OUT/soak.csv $OUT/soak.svg (logs in $tmp)"
