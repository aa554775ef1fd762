#!/bin/bash
# A throw-away Postfix on a loopback port, with its own config, queue and
# mailboxes under DIR: the real MTA that smtpgate's tests and demo run
# smtpgate in front of.
#
#   postfix.sh start DIR PORT [DOMAIN [USERS...]]   configure and start
#   postfix.sh stop DIR
#
# PROCESS_LIMIT in the environment sets default_process_limit (100).
#
# Mail for USER@DOMAIN (default alice bob) is delivered to DIR/mail/USER/
# (maildir). XCLIENT and XFORWARD are allowed from 127.0.0.0/8 so that
# Postfix logs and checks the real client smtpgate reports.
set -eu

cmd=$1 dir=$2
case $cmd in
stop)
	postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
	exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop DIR [PORT [DOMAIN [USERS...]]]" >&2; exit 2 ;;
esac
port=$3
domain=${4:-example.com}
shift 3; [ $# -gt 0 ] && shift
users=${*:-alice bob}

command -v postfix >/dev/null || { echo "postfix is not installed (apt-get install postfix)" >&2; exit 1; }

# Every Postfix process logs through postlogd's unix-dgram socket
# (maillog_file). With the kernel's datagram queue at 10 (some minimal VMs;
# most systems have 512), a burst of log lines before postlogd reads its
# socket blocks every sender, postlogd's own start-up messages included:
# the whole instance hangs, "postfix stop" too. Raise it where it is that
# low (root only; it is a per-network-namespace setting).
qlen=/proc/sys/net/unix/max_dgram_qlen
if [ -w "$qlen" ] && [ "$(cat "$qlen")" -lt 512 ]; then
	echo 512 >"$qlen" || echo "postfix.sh: could not raise $qlen; postlogd may deadlock" >&2
fi

mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/mail"
chmod 755 "$dir"
dir=$(cd "$dir" && pwd)
chown postfix "$dir/data"
chown nobody:nogroup "$dir/mail"
touch "$dir/maillog"

maps=""
for u in $users; do maps="$maps $u@$domain=$u/"; done

cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
myhostname = mta.$domain
mydomain = $domain
myorigin = $domain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
alias_maps =
alias_database =
virtual_mailbox_domains = $domain
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = inline:{$(echo $maps | sed 's/ /, /g')}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_mailbox_limit = 0
message_size_limit = 104857600
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
# Mail for other domains (relayed by smtpgate for authenticated users or
# relay.networks) is discarded here, logged as "status=sent (...discarded)":
# this throw-away MTA never talks to the outside world.
default_transport = discard:relayed mail discarded by the test MTA
smtpd_reject_unlisted_recipient = yes
smtpd_forbid_bare_newline = normalize
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = ${PROCESS_LIMIT:-100}
# The fault tests SIGKILL smtpd processes; one killed before it served a
# client makes master throttle the service for service_throttle_time
# (60s), and the tests after it would get no greeting.
service_throttle_time = 1s
biff = no
CF
# Extra main.cf lines for one test's own instance (POSTFIX_MAIN_CF_EXTRA).
if [ -n "${POSTFIX_MAIN_CF_EXTRA:-}" ]; then printf '%s\n' "$POSTFIX_MAIN_CF_EXTRA" >> "$dir/etc/main.cf"; fi

cat > "$dir/etc/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF

postfix -c "$dir/etc" check >/dev/null 2>&1 || true
# A cleanup stopped in the middle of a message (the fault tests stop
# Postfix under load) leaves a temporary file in incoming. postsuper's
# start-up check then logs a warning with mail_owner's privileges, cannot
# open maillog_file, and Postfix refuses to start, every time. Such a file
# is a message nobody was told was accepted: remove it.
find "$dir/queue/incoming" -type f -name '*.*' -delete 2>/dev/null || true
if ! out=$(postfix -c "$dir/etc" start 2>&1); then
	echo "postfix did not start: $out" >&2
	echo "its log:" >&2
	tail -20 "$dir/maillog" >&2
	exit 1
fi
# Wait until it answers.
i=0
while ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
	i=$((i+1)); [ $i -gt 100 ] && { echo "postfix not listening on $port" >&2; tail -20 "$dir/maillog" >&2; exit 1; }
	sleep 0.1
done
