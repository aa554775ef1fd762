#!/bin/bash
# smtpgate's benchmark: Postfix's smtp-source against (a) smtp-sink directly,
# the physical limit of this machine, and (b) smtpgate in front of the same
# smtp-sink, runs alternating A/B, for several message sizes and session
# counts, with smtpgate's default checks on (DNS answered by dnsd on
# loopback) and with every check off. Prints a Markdown table.
#
#   integration/bench/run.sh            quick mode, about 10 minutes
#   FULL=1 integration/bench/run.sh     4x the messages and 7 runs per cell
#
# Environment: RUNS (runs per cell, default 5, FULL 7), SETS (a regexp
# choosing parameter sets by name, e.g. 's20-4k'), MODES ("on off"; also
# "limits": checks on and the four rate limits on, at rates no run
# reaches, in the node's memory; "redis": the same in a redis-server
# the script starts on loopback, store.redis; "stream": the defaults with
# the whole-message checks off),
# SMTPGATE_PPROF (passed on: smtpgate serves net/http/pprof there),
# MSGS (messages per run for every set, to try the script out), KEEP=1
# keeps the temp dir (logs, configs).
#
# Every parameter set also has a row for Postfix's smtpd as a before-queue
# proxy (smtpd_proxy_filter) in front of the same smtp-sink: the peer most
# operators would use instead (a private instance on loopback, as the
# tests'; BENCH_POSTFIX=0 leaves it out).
#
# BENCH_HARAKA=1 adds a row per parameter set for Haraka (queue/smtp_forward
# to the same smtp-sink, one node process, config in
# integration/bench/haraka/config), installed with npm by
# integration/bench/haraka/install.sh (cached per version, see there;
# HARAKA_VERSION picks the version). Needs Node.js 20+ and npm.
# HARAKA_NODELAY=1 (diagnosis) turns on TCP_NODELAY on Haraka's connection
# to smtp-sink, see integration/bench/haraka/plugins/bench_nodelay.js.
#
# Needs smtp-source and smtp-sink (Debian: apt-get install postfix) and Go.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PATH=$PATH:/usr/sbin
for t in smtp-source smtp-sink go; do
	command -v $t >/dev/null || { echo "bench: $t not found (smtp-source/smtp-sink: apt-get install postfix)" >&2; exit 1; }
done

FULL=${FULL:-0}
RUNS=${RUNS:-$([ "$FULL" = 1 ] && echo 7 || echo 5)}
MODES=${MODES:-on off}
SETS=${SETS:-.}
BENCH_HARAKA=${BENCH_HARAKA:-0}
BENCH_POSTFIX=${BENCH_POSTFIX:-1}
scale=$([ "$FULL" = 1 ] && echo 4 || echo 1)

# name | smtp-source args | messages per run (quick mode)
sets=(
	"s1-1k|-s 1 -l 1024|3000"
	"s20-4k|-s 20 -l 4096|10000"
	"s100-4k|-s 100 -l 4096|10000"
	"s20-100k|-s 20 -l 102400|3000"
	"s2-10M|-s 2 -l 10485760|20"
)

tmp=$(mktemp -d /tmp/smtpgate-bench.XXXXXX)
pids=()
harakadir=
cleanup() {
	[ -n "${pfdir:-}" ] && [ -d "$pfdir/etc" ] && bash "$root/integration/postfix.sh" stop "$pfdir"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ "${KEEP:-0}" = 1 ] && echo "bench: kept $tmp" >&2 || rm -rf "$tmp"
	# an uncached Haraka install (HARAKA_CACHE=0) is ours to remove
	[ "${HARAKA_CACHE:-1}" = 0 ] && [ -n "$harakadir" ] && rm -rf "$harakadir"
	return 0
}
trap cleanup EXIT

freeport() { python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])
PY
}
waitport() { # port [tries of 50 ms] [pid that must stay alive]
	for _ in $(seq "${2:-100}"); do
		(exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
		[ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && { echo "bench: process $3 exited before listening on $1" >&2; return 1; }
		sleep 0.05
	done
	echo "bench: nothing listens on $1" >&2; return 1
}

if [ "$BENCH_HARAKA" = 1 ]; then
	# before the build: fail early if npm is missing or the install fails
	harakadir=$(HARAKA_CACHE=${HARAKA_CACHE:-1} "$here/haraka/install.sh") || { echo "bench: installing Haraka failed (see above)" >&2; exit 1; }
	harakaver=$(node -p 'require(process.argv[1]).version' "$harakadir/node_modules/Haraka/package.json")
	echo "bench: Haraka $harakaver in $harakadir" >&2
fi

echo "bench: building" >&2
(cd "$root" && go build -o "$tmp/smtpgate" ./cmd/smtpgate && go build -o "$tmp/dnsd" ./integration/bench/dnsd)

"$tmp/dnsd" >"$tmp/dnsd.addr" & pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/dnsd.addr" ] && break; sleep 0.05; done
dnsaddr=$(cat "$tmp/dnsd.addr")

sinkport=$(freeport)
# -m: smtp-sink's connection cap. -C -F: no XCLIENT/XFORWARD (smtp-sink
# answers XCLIENT with 250 where Postfix says 220; smtpgate then sends none).
smtp-sink -C -F -u nobody -m 2000 127.0.0.1:$sinkport 2000 2>"$tmp/sink.log" & pids+=($!)
waitport $sinkport

gateport=$(freeport)
gatepid=
config() { # mode
	cat <<CFG
hostname: gw.example.com
listen:
  - address: 127.0.0.1:$gateport
upstream:
  address: 127.0.0.1:$sinkport
  timeout: 60s
  # smtp-sink runs with -C -F: nothing to present the client with
  xclient: off
  # every smtp-source session comes from 127.0.0.1: the per-client caps
  # would refuse the -s 100 rows
  max_connections: 1000
  max_connections_per_ip: 1000
limits:
  max_connections_per_ip: 1000
$(ratelimits "$1")
domains: [example.com]
dns:
  servers: [$dnsaddr]
  timeout: 2s
CFG
	if [ "$1" = off ]; then
		echo "checks:"
		for c in dnsbl invalid_helo non_fqdn_helo forged_helo non_fqdn_sender own_domain_forgery sender_login_mismatch unknown_sender_domain spf unauth_destination unknown_recipient header_checks body_checks dkim own_domain_header_forgery dmarc authentication_results; do
			echo "  $c: {mode: off}"
		done
	fi
	if [ "$1" = stream ]; then
		# the defaults without the whole-message checks: streaming DATA
		echo "checks:"
		for c in dkim own_domain_header_forgery dmarc authentication_results; do
			echo "  $c: {mode: off}"
		done
	fi
}
# ratelimits MODE: the rate limits of the limits and redis modes (every
# smtp-source session is one client and one sender: rates no run reaches,
# so that every message pays for its buckets and none is refused).
ratelimits() {
	case $1 in limits | redis)
		printf '  %s: 100000000/1s\n' connection_rate_per_ip messages_per_ip recipients_per_ip recipients_per_sender
		;;
	esac
	if [ "$1" = redis ]; then
		printf 'store:\n  redis:\n    address: 127.0.0.1:%s\n' "$redisport"
	fi
}
redisport=
if [[ " $MODES " == *" redis "* ]]; then
	command -v redis-server >/dev/null || { echo "bench: redis-server not found (apt-get install redis-server, or make deps)" >&2; exit 1; }
	redisport=$(freeport)
	mkdir -p "$tmp/redis"
	redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp/redis" --logfile "$tmp/redis/redis.log" & pids+=($!)
	waitport "$redisport"
fi
startgate() { # mode name
	config "$1" >"$tmp/gate-$1.yaml"
	"$tmp/smtpgate" -config "$tmp/gate-$1.yaml" >>"$tmp/gate-$1-$2.log" 2>&1 &
	gatepid=$!
	pids+=($gatepid)
	waitport $gateport
}
stopgate() {
	kill "$gatepid" 2>/dev/null || true
	wait "$gatepid" 2>/dev/null || true
}
harakaport=$(freeport)
harakapid=
startharaka() { # name
	local d=$tmp/haraka-$1
	mkdir -p "$d/config"
	# Haraka's own defaults (connection.ini and the like), then ours
	cp -r "$harakadir/node_modules/Haraka/config/." "$d/config/"
	cp -r "$here/haraka/config/." "$d/config/"
	cp -r "$here/haraka/plugins" "$d/"
	if [ "${HARAKA_NODELAY:-0}" = 1 ]; then
		printf 'bench_nodelay\n' | cat - "$d/config/plugins" >"$d/config/plugins.new"
		mv "$d/config/plugins.new" "$d/config/plugins"
	fi
	# nodes=0: no cluster, so the one node process does all the work and its
	# /proc figures are Haraka's; SIGTERM ends it at once (not PID 1).
	cat >"$d/config/smtp.ini" <<INI
listen=127.0.0.1:$harakaport
nodes=0
INI
	cat >"$d/config/smtp_forward.ini" <<INI
host=127.0.0.1
port=$sinkport
enable_tls=false
INI
	BENCH_DNS=$dnsaddr node "$harakadir/node_modules/Haraka/bin/haraka" -c "$d" >"$tmp/haraka-$1.log" 2>&1 &
	harakapid=$!
	pids+=($harakapid)
	if ! waitport $harakaport 600 $harakapid; then
		echo "bench: Haraka did not start; the end of its log:" >&2
		tail -20 "$tmp/haraka-$1.log" >&2
		exit 1
	fi
}
stopharaka() {
	kill "$harakapid" 2>/dev/null || true
	wait "$harakapid" 2>/dev/null || true
}
pfport=$(freeport)
pfdir=$tmp/postfix
pfmaster=
# startpostfix: Postfix's smtpd with smtpd_proxy_filter to smtp-sink, no
# connection count limit and processes enough for -s 100.
startpostfix() {
	chmod 755 "$tmp" # the postfix user must reach its queue and data below it
	PROCESS_LIMIT=300 POSTFIX_MAIN_CF_EXTRA="smtpd_proxy_filter = 127.0.0.1:$sinkport
smtpd_proxy_timeout = 60s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_peername_lookup = no" \
		bash "$root/integration/postfix.sh" start "$pfdir" "$pfport" example.com rcpt >"$tmp/postfix-start.log" 2>&1 ||
		{ echo "bench: Postfix did not start:" >&2; cat "$tmp/postfix-start.log" >&2; exit 1; }
	waitport $pfport
	pfmaster=$(head -1 "$pfdir/queue/pid/master.pid" | tr -d ' ')
}
stoppostfix() { bash "$root/integration/postfix.sh" stop "$pfdir"; }
# Postfix is many processes: its CPU is the sum over the instance's
# processes (the master with its reaped children, and the live ones).
pfticks() {
	local t p
	t=$(awk '{print $14+$15+$16+$17}' "/proc/$pfmaster/stat")
	for p in $(pgrep -P "$pfmaster"); do t=$((t + $(cputicks "$p" 2>/dev/null || echo 0))); done
	echo "$t"
}
# ticksof PID|postfix: CPU ticks used so far
ticksof() { if [ "$1" = postfix ]; then pfticks; else cputicks "$1"; fi; }
cputicks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
tck=$(getconf CLK_TCK)

# source PORT ARGS COUNT -> messages/s on stdout; failures to stderr
source_run() {
	local port=$1 args=$2 n=$3 t0 t1 err
	err=$tmp/source.err
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	if ! smtp-source $args -m "$n" -M client.example.org -f sender@example.org -t rcpt@example.com 127.0.0.1:$port 2>"$err"; then
		echo "bench: smtp-source failed against port $port:" >&2; head -5 "$err" >&2; return 1
	fi
	[ -s "$err" ] && { echo "bench: smtp-source complained:" >&2; head -3 "$err" >&2; }
	t1=$(date +%s.%N)
	awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", n/(b-a)}'
}
median() { sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
# row ARGS LABEL DIRECT RELAY TICKS MSGS RSS_KB -> one table row
row() {
	awk -v a="$1" -v m="$2" -v d="$3" -v g="$4" -v t="$5" -v tck="$tck" -v n="$6" -v rss="$7" \
		'BEGIN{printf "| `%s` | %s | %.0f | %.0f | %.2f | %.3f | %s |", a, m, d, g, (d>0?g/d:0), t/tck/n*1000, (rss<0?"n/a":sprintf("%.1f", rss/1024))}'
}

# measure PORT PID WHAT LABEL: a warm-up (caches, connections, page
# faults), then RUNS runs alternating direct and through the relay on PORT
# (process PID). Sets d and g (median msg/s direct and relayed), ticks
# (PID's CPU ticks during the relayed runs) and msgs. Uses $args and $n.
measure() {
	local port=$1 pid=$2 what=$3 label=$4 r c0 c1 direct=() relay=()
	source_run "$port" "$args" $(( n / 10 > 2 ? n / 10 : 2 )) >/dev/null || { echo "bench: $what: the warm-up run failed" >&2; exit 1; }
	ticks=0 msgs=0
	for r in $(seq "$RUNS"); do
		direct+=("$(source_run $sinkport "$args" "$n")") || { echo "bench: $what: a direct run failed" >&2; exit 1; }
		c0=$(ticksof "$pid")
		relay+=("$(source_run "$port" "$args" "$n")") || { echo "bench: $what: a run through $label failed" >&2; exit 1; }
		c1=$(ticksof "$pid")
		ticks=$((ticks + c1 - c0)) msgs=$((msgs + n))
		echo "bench: $what run $r: direct ${direct[-1]}/s $label ${relay[-1]}/s" >&2
	done
	d=$(printf '%s\n' "${direct[@]}" | median)
	g=$(printf '%s\n' "${relay[@]}" | median)
}

rows=()
total_start=$(date +%s)
for s in "${sets[@]}"; do
	IFS='|' read -r name args n <<<"$s"
	[[ $name =~ $SETS ]] || continue
	n=$((${MSGS:-$n} * scale))
	for mode in $MODES; do
		startgate "$mode" "$name"
		measure $gateport $gatepid "$name checks=$mode" smtpgate
		rss=$(hwm $gatepid)
		stopgate
		errs=$(grep -c 'level=ERROR' "$tmp/gate-$mode-$name.log" || true)
		[ "$errs" != 0 ] && echo "bench: $errs error lines in smtpgate's log ($name, checks $mode)" >&2
		label="smtpgate, checks $mode"
		rows+=("$(row "$args" "$label" "$d" "$g" "$ticks" "$msgs" "$rss")")
	done
	if [ "$BENCH_POSTFIX" = 1 ]; then
		startpostfix
		measure $pfport postfix "$name Postfix" "Postfix before-queue"
		stoppostfix
		rows+=("$(row "$args" "Postfix $(postconf -d -h mail_version) smtpd_proxy_filter" "$d" "$g" "$ticks" "$msgs" -1)")
	fi
	if [ "$BENCH_HARAKA" = 1 ]; then
		startharaka "$name"
		measure $harakaport $harakapid "$name" Haraka
		rss=$(hwm $harakapid)
		stopharaka
		# not counted: the TLS key and certificate Haraka's core looks for at
		# start (no STARTTLS here)
		errs=$(grep -E '\[(ERROR|CRIT|ALERT|EMERG)\]' "$tmp/haraka-$name.log" | grep -cvE 'tls (key|cert) .* could not be loaded' || true)
		[ "$errs" != 0 ] && echo "bench: $errs error lines in Haraka's log ($name)" >&2
		hlabel="Haraka $harakaver"
		[ "${HARAKA_NODELAY:-0}" = 1 ] && hlabel="$hlabel, TCP_NODELAY"
		rows+=("$(row "$args" "$hlabel" "$d" "$g" "$ticks" "$msgs" "$rss")")
	fi
done

cores=$(nproc)
mem=$(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
echo
echo "$(date -u +%Y-%m-%d), $cores cores ($cpu), $mem RAM, $(go version | awk '{print $3}'); median of $RUNS runs; $(( $(date +%s) - total_start ))s"
echo
echo "| smtp-source args | relay | direct msg/s | relay msg/s | ratio | relay CPU s / 1,000 msgs | relay peak RSS MB |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
