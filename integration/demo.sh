#!/bin/bash
# smtpgate demo: a throw-away Postfix on a loopback port, smtpgate in front
# of it, and four messages sent with swaks -- one accepted and delivered,
# three refused while the client is still connected.
#
#   make demo                 (installs postfix/swaks if missing, builds, runs this)
#   bash integration/demo.sh  (needs root, postfix, swaks and bin/smtpgate)
#
# Ports (loopback only) can be changed when the defaults are taken:
#   SMTPGATE_DEMO_PORT=2525       where smtpgate listens
#   SMTPGATE_DEMO_MTA_PORT=10025  where the throw-away Postfix listens
#
# Everything lives in one temporary directory that is removed on exit;
# smtpgate is stopped with SIGTERM and Postfix with `postfix stop`.
# Exits non-zero if the accepted message was not delivered.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$PATH:/usr/sbin:/sbin"

GATE_PORT=${SMTPGATE_DEMO_PORT:-2525}
MTA_PORT=${SMTPGATE_DEMO_MTA_PORT:-10025}
DOMAIN=example.com
BIN=$repo/bin/smtpgate

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' Y=$'\e[33m' R=$'\e[31m' N=$'\e[0m'; else B= G= Y= R= N=; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
ok()   { printf '%s    ok: %s%s\n' "$G" "$*" "$N"; }
note() { printf '%s    note: %s%s\n' "$Y" "$*" "$N"; }
die()  { printf '%sdemo: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

# --- preconditions ------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root: Postfix must start as root (it drops privileges itself)"
command -v postfix >/dev/null || die "postfix is not installed: run 'make deps' (as root)"
command -v swaks >/dev/null || die "swaks is not installed: run 'make deps' (as root)"
[ -x "$BIN" ] || die "$BIN is missing: run 'make build' (or 'make demo', which builds it)"

# Leftovers of a demo that was killed before it could clean up (SIGKILL,
# power loss): stop its smtpgate and Postfix so that its ports are free.
# A demo that is still running is left alone.
for old in "${TMPDIR:-/tmp}"/smtpgate-demo.*; do
	[ -d "$old" ] || continue
	if [ -f "$old/demo.pid" ] && kill -0 "$(cat "$old/demo.pid")" 2>/dev/null; then continue; fi
	if [ -f "$old/smtpgate.pid" ]; then
		pid=$(cat "$old/smtpgate.pid")
		if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$old/smtpgate.yaml"; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
	fi
	if [ -f "$old/postfix/etc/main.cf" ]; then
		master=$(tr -d ' ' <"$old/postfix/queue/pid/master.pid" 2>/dev/null || true)
		bash "$repo/integration/postfix.sh" stop "$old/postfix"
		[ -n "$master" ] && for _ in $(seq 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -rf "$old"
done

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$MTA_PORT:SMTPGATE_DEMO_MTA_PORT:the throw-away Postfix" "$GATE_PORT:SMTPGATE_DEMO_PORT:smtpgate"; do
	port=${p%%:*} rest=${p#*:}; var=${rest%%:*} what=${rest#*:}
	if in_use "$port"; then
		who=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 || true)
		die "port 127.0.0.1:$port (for $what) is already in use${who:+ by $who}.
      Stop whatever listens there, or pick another port: $var=NNNN make demo"
	fi
done

# --- cleanup on exit ----------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/smtpgate-demo.XXXXXX")
chmod 755 "$tmp" # Postfix's own users must reach its queue and mailboxes
echo $$ >"$tmp/demo.pid"
gate_pid=
dns_pid=
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	[ -n "$dns_pid" ] && kill -TERM "$dns_pid" 2>/dev/null || true
	if [ -n "$gate_pid" ] && kill -0 "$gate_pid" 2>/dev/null; then
		kill -TERM "$gate_pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$gate_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$gate_pid" 2>/dev/null || true
	fi
	if [ -f "$tmp/postfix/etc/main.cf" ]; then
		master=$(tr -d ' ' <"$tmp/postfix/queue/pid/master.pid" 2>/dev/null || true)
		bash "$repo/integration/postfix.sh" stop "$tmp/postfix"
		if [ -n "$master" ]; then
			for _ in $(seq 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
		fi
	fi
	rm -rf "$tmp"
	[ "$rc" = 0 ] && printf '\n%s==> Cleaned up: smtpgate and Postfix stopped, %s removed%s\n' "$B" "$tmp" "$N"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. the MTA -----------------------------------------------------------
step "Starting a throw-away Postfix on 127.0.0.1:$MTA_PORT (domain $DOMAIN, users alice bob)"
bash "$repo/integration/postfix.sh" start "$tmp/postfix" "$MTA_PORT" "$DOMAIN" alice bob
ok "Postfix answers; mail for alice@$DOMAIN goes to $tmp/postfix/mail/alice/"

# --- 2. DNS ----------------------------------------------------------------
# smtpgate checks every sender domain in DNS (unknown_sender_domain, SPF).
# This machine may have no resolver that knows example.org, so a small test
# DNS server answers for the demo's domains on a loopback port.
step "Starting a test DNS server for example.org and $DOMAIN"
(cd "$repo" && go build -o "$tmp/dnsd" ./integration/bench/dnsd)
"$tmp/dnsd" >"$tmp/dnsd.addr" &
dns_pid=$!
for _ in $(seq 100); do [ -s "$tmp/dnsd.addr" ] && break; sleep 0.05; done
dns_addr=$(cat "$tmp/dnsd.addr")
[ -n "$dns_addr" ] || die "the test DNS server did not start"
ok "DNS on $dns_addr"

# --- 3. smtpgate ----------------------------------------------------------
step "Starting smtpgate on 127.0.0.1:$GATE_PORT in front of it"
cat >"$tmp/recipients" <<EOF
# The addresses that exist: anything else @$DOMAIN is refused at RCPT.
alice@$DOMAIN
bob@$DOMAIN
EOF
cat >"$tmp/smtpgate.yaml" <<EOF
hostname: gw.$DOMAIN
listen:
  - address: 127.0.0.1:$GATE_PORT
upstream:
  address: 127.0.0.1:$MTA_PORT
domains: [$DOMAIN]
dns:
  servers: [$dns_addr]
recipients:
  files: [$tmp/recipients]
shutdown:
  drain_timeout: 5s
EOF
sed 's/^/    /' "$tmp/smtpgate.yaml"
"$BIN" -check -config "$tmp/smtpgate.yaml" >/dev/null
"$BIN" -config "$tmp/smtpgate.yaml" >"$tmp/smtpgate.log" 2>&1 &
gate_pid=$!
echo "$gate_pid" >"$tmp/smtpgate.pid"
for i in $(seq 100); do
	in_use "$GATE_PORT" && break
	kill -0 "$gate_pid" 2>/dev/null || { cat "$tmp/smtpgate.log" >&2; die "smtpgate exited at start (its log is above)"; }
	[ "$i" = 100 ] && { cat "$tmp/smtpgate.log" >&2; die "smtpgate is not listening on 127.0.0.1:$GATE_PORT after 10s"; }
	sleep 0.1
done
ok "smtpgate is running (pid $gate_pid), logging to $tmp/smtpgate.log"

# send DESCRIPTION SWAKS-ARGS...: runs swaks against smtpgate, shows the
# SMTP dialogue without the message text, and leaves it in $out.
send() {
	out=$(swaks --server "127.0.0.1:$GATE_PORT" --timeout 30 --helo client.example.org \
		--hide-informational --suppress-data "$@" 2>&1) || true
	# EHLO's capability lines are the same every time: keep only the first.
	printf '%s\n' "$out" | sed -e '/^ *<- *250-/{/Hello/!d;}' -e 's/^/    /'
}
# replied CODE: did a server reply in the last dialogue start with CODE?
replied() { printf '%s\n' "$out" | grep -Eq "^ *<\*\* +$1|^ *<- +$1"; }

failed=0

# --- 3. four messages -----------------------------------------------------
step "1/4 A message for alice@$DOMAIN: accepted, the reply is the MTA's own (with its queue id)"
send --from someone@example.org --to "alice@$DOMAIN" \
	--header "Subject: Hello from the smtpgate demo" \
	--body "Hi Alice, this message went through smtpgate to Postfix."
qid=$(printf '%s\n' "$out" | sed -n 's/.*queued as \([0-9A-Za-z]*\).*/\1/p' | head -1)
if [ -n "$qid" ]; then
	ok "accepted; Postfix queued it as $qid"
else
	note "the message was NOT accepted"
	failed=1
fi

step "2/4 A message for nobody@$DOMAIN: refused at RCPT, the address is not in the recipients file"
send --from someone@example.org --to "nobody@$DOMAIN" --quit-after RCPT
if replied 550; then ok "refused: 550 5.1.1 User unknown"; else note "expected a 550 5.1.1 refusal"; failed=1; fi

step "3/4 A relay attempt to someone@example.net: refused, example.net is not our domain"
send --from someone@example.org --to someone@example.net --quit-after RCPT
if replied 554; then
	ok "refused: 554 5.7.1 Relay access denied"
else
	note "expected a 554 5.7.1 refusal"; failed=1
fi

step "4/4 A forged sender ceo@$DOMAIN from a client that did not log in: refused (decided at MAIL, reported at RCPT like Postfix's smtpd_delay_reject)"
send --from "ceo@$DOMAIN" --to "alice@$DOMAIN" --quit-after RCPT
if replied 553; then
	ok "refused: 553 5.7.1 not logged in"
else
	note "expected a 553 5.7.1 refusal"; failed=1
fi

# --- 4. what arrived --------------------------------------------------------
step "The message as delivered to alice's maildir (first lines)"
msg=
if [ -n "$qid" ]; then
	for _ in $(seq 100); do
		msg=$(ls "$tmp"/postfix/mail/alice/new/* 2>/dev/null | head -1 || true)
		[ -n "$msg" ] && break
		sleep 0.1
	done
fi
if [ -n "$msg" ]; then
	echo "    $msg"
	head -n 20 "$msg" | sed 's/^/    | /'
	ok "delivered"
else
	note "nothing arrived in $tmp/postfix/mail/alice/new/; Postfix's log:"
	tail -n 20 "$tmp/postfix/maillog" | sed 's/^/    /'
	failed=1
fi

step "smtpgate's log: one line per decision (accept with the MTA's queue id, reject with the check)"
grep -E 'msg=(accept|reject|tempfail|abort)|msg="?smtpgate starting' "$tmp/smtpgate.log" | sed 's/^/    /' || true

if [ -n "$qid" ]; then
	step "Postfix's log for $qid"
	grep -F " $qid: " "$tmp/postfix/maillog" | sed 's/^/    /' || true
fi

if [ "$failed" != 0 ]; then
	die "the accepted message did not arrive in alice's mailbox"
fi
step "Done: 1 message delivered through smtpgate"
