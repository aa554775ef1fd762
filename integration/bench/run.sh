#!/bin/bash
# smtpgate's benchmark: Postfix's smtp-source against (a) smtp-sink directly,
# the physical limit of this machine, and (b) smtpgate in front of the same
# smtp-sink, runs alternating A/B, for several message sizes and session
# counts, with smtpgate's default checks on (DNS answered by dnsd on
# loopback) and with every check off. Prints a Markdown table.
#
#   integration/bench/run.sh            quick mode, about 3 minutes
#   FULL=1 integration/bench/run.sh     4x the messages and 7 runs per cell
#
# Environment: RUNS (runs per cell, default 5, FULL 7), SETS (a regexp
# choosing parameter sets by name, e.g. 's20-4k'), MODES ("on off"),
# SMTPGATE_PPROF (passed on: smtpgate serves net/http/pprof there),
# KEEP=1 keeps the temp dir (logs, configs).
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
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ "${KEEP:-0}" = 1 ] && echo "bench: kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT

freeport() { python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])
PY
}
waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "bench: nothing listens on $1" >&2; return 1; }

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
domains: [example.com]
dns:
  servers: [$dnsaddr]
  timeout: 2s
CFG
	if [ "$1" = off ]; then
		echo "checks:"
		for c in dnsbl invalid_helo non_fqdn_helo forged_helo non_fqdn_sender own_domain_forgery sender_login_mismatch unknown_sender_domain spf unauth_destination unknown_recipient header_checks body_checks; do
			echo "  $c: {mode: off}"
		done
	fi
}
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
		echo "bench: smtp-source failed against port $port:" >&2; head -5 "$err" >&2; echo 0; return
	fi
	[ -s "$err" ] && { echo "bench: smtp-source complained:" >&2; head -3 "$err" >&2; }
	t1=$(date +%s.%N)
	awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", n/(b-a)}'
}
median() { sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2 }'; }

rows=()
total_start=$(date +%s)
for s in "${sets[@]}"; do
	IFS='|' read -r name args n <<<"$s"
	[[ $name =~ $SETS ]] || continue
	n=$((n * scale))
	for mode in $MODES; do
		startgate "$mode" "$name"
		# warm up: caches, connections, page faults
		source_run $gateport "$args" $(( n / 10 > 2 ? n / 10 : 2 )) >/dev/null
		direct=() gate=() ticks=0 msgs=0
		for r in $(seq "$RUNS"); do
			direct+=("$(source_run $sinkport "$args" "$n")")
			c0=$(cputicks $gatepid)
			gate+=("$(source_run $gateport "$args" "$n")")
			c1=$(cputicks $gatepid)
			ticks=$((ticks + c1 - c0)) msgs=$((msgs + n))
			echo "bench: $name checks=$mode run $r: direct ${direct[-1]}/s smtpgate ${gate[-1]}/s" >&2
		done
		d=$(printf '%s\n' "${direct[@]}" | median)
		g=$(printf '%s\n' "${gate[@]}" | median)
		rss=$(hwm $gatepid)
		stopgate
		errs=$(grep -c 'level=ERROR' "$tmp/gate-$mode-$name.log" || true)
		[ "$errs" != 0 ] && echo "bench: $errs error lines in smtpgate's log ($name, checks $mode)" >&2
		rows+=("$(awk -v a="$args" -v m="$mode" -v d="$d" -v g="$g" -v t="$ticks" -v tck="$tck" -v n="$msgs" -v rss="$rss" \
			'BEGIN{printf "| `%s` | %s | %.0f | %.0f | %.2f | %.3f | %.1f |", a, m, d, g, (d>0?g/d:0), t/tck/n*1000, rss/1024}')")
	done
done

cores=$(nproc)
mem=$(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo)
cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
echo
echo "$(date -u +%Y-%m-%d), $cores cores ($cpu), $mem RAM, $(go version | awk '{print $3}'); median of $RUNS runs; $(( $(date +%s) - total_start ))s"
echo
echo "| smtp-source args | checks | direct msg/s | smtpgate msg/s | ratio | smtpgate CPU s / 1,000 msgs | smtpgate peak RSS MB |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
