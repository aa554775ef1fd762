#!/bin/bash
# A throw-away MTA on a loopback port, with its config, queue and mailboxes
# under DIR: Postfix (integration/postfix.sh), Exim 4 or OpenSMTPD, the
# last two from Debian's packages, fetched with apt-get download and
# unpacked with dpkg -x under DIR (they conflict with postfix in apt, so
# they are never installed on the system).
#
#   mta.sh start postfix|exim|opensmtpd DIR PORT [DOMAIN [USERS...]]
#   mta.sh stop DIR
#   mta.sh version postfix|exim|opensmtpd DIR
#
# Mail for USER@DOMAIN (default alice bob) is delivered to DIR/mail/USER/
# (maildir); other recipients in DOMAIN are refused at RCPT with the MTA's
# own 5xx. Every MTA offers DSN. MTA_MAX_PER_CONN, when set, is the MTA's
# limit of messages per SMTP connection (Exim smtp_accept_max_per_connection,
# OpenSMTPD smtp limit max-mails; Postfix has none).
#
# Exim and OpenSMTPD run in a private mount namespace (unshare -m) where a
# copy of /etc/passwd and /etc/group has the users they want (Debian-exim;
# opensmtpd, opensmtpq) and OpenSMTPD's hard-coded /var/spool/smtpd,
# /var/lib/opensmtpd/empty, /run and /usr/libexec/opensmtpd are bind mounts
# of directories under DIR: nothing outside DIR is changed.
set -eu

usage() { echo "usage: $0 start postfix|exim|opensmtpd DIR PORT [DOMAIN [USERS...]] | stop DIR | version KIND DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
here=$(cd "$(dirname "$0")" && pwd)

# fetch KIND DIR: the packages' files, unpacked under DIR/root.
fetch() {
	local kind=$1 dir=$2 pkgs
	case $kind in
	exim) pkgs="exim4-base exim4-daemon-light libidn12" ;;
	opensmtpd) pkgs="opensmtpd" ;;
	esac
	[ -e "$dir/root/.$kind" ] && return 0
	mkdir -p "$dir/debs" "$dir/root"
	# apt-get download writes to the current directory; as root it warns
	# that the _apt user cannot write there, which is harmless.
	if ! (cd "$dir/debs" && apt-get download $pkgs) >"$dir/debs/apt.log" 2>&1; then
		# Package lists missing or stale (a fresh CI machine): refresh once.
		apt-get update >>"$dir/debs/apt.log" 2>&1 || true
		if ! (cd "$dir/debs" && apt-get download $pkgs) >>"$dir/debs/apt.log" 2>&1; then
			echo "apt-get download $pkgs failed:" >&2
			tail -20 "$dir/debs/apt.log" >&2
			exit 1
		fi
	fi
	for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
	touch "$dir/root/.$kind"
}

# users DIR LINES...: copies of /etc/passwd and /etc/group with users added
# (name:uid), for the private mount namespace.
users() {
	local dir=$1; shift
	cp /etc/passwd "$dir/passwd"
	cp /etc/group "$dir/group"
	for u in "$@"; do
		local name=${u%%:*} id=${u##*:}
		grep -q "^$name:" /etc/passwd || echo "$name:x:$id:$id:$name:/nonexistent:/usr/sbin/nologin" >>"$dir/passwd"
		grep -q "^$name:" /etc/group || echo "$name:x:$id:" >>"$dir/group"
	done
}

wait_port() {
	local port=$1 log=$2 i=0
	while ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
		i=$((i+1))
		if [ $i -gt 150 ]; then
			echo "not listening on $port; its log:" >&2
			tail -20 "$log" >&2
			exit 1
		fi
		sleep 0.1
	done
}

start_exim() {
	local dir=$1 port=$2 domain=$3 users=$4
	fetch exim "$dir"
	mkdir -p "$dir/spool" "$dir/log" "$dir/mail"
	# The packaged binary is setuid root: the loader would ignore
	# LD_LIBRARY_PATH, and Exim would re-execute /usr/sbin/exim4. A copy
	# without the bit, named by exim_path, does neither.
	install -m 0755 "$dir/root/usr/sbin/exim4" "$dir/exim"
	chown nobody:nogroup "$dir/spool" "$dir/log" "$dir/mail"
	users "$dir" Debian-exim:60100
	local parts
	parts=$(echo $users | sed 's/ / : /g')
	cat >"$dir/exim.conf" <<CF
exim_path = $dir/exim
exim_user = nobody
exim_group = nogroup
keep_environment = LD_LIBRARY_PATH
spool_directory = $dir/spool
log_file_path = $dir/log/%slog
log_selector = +smtp_connection +received_recipients
primary_hostname = mta.$domain
daemon_smtp_ports = $port
local_interfaces = 127.0.0.1
deliver_drop_privilege
tls_advertise_hosts =
dsn_advertise_hosts = 127.0.0.1
message_size_limit = 100M
smtp_accept_max_per_connection = ${MTA_MAX_PER_CONN:-1000}
domainlist local_domains = $domain
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  deny    domains = +local_domains
          !local_parts = $parts
          message = 5.1.1 <\$local_part@\$domain>: User unknown
  accept  domains = +local_domains
  deny    message = 5.7.1 <\$local_part@\$domain>: Relay access denied
begin routers
localuser:
  driver = accept
  domains = +local_domains
  local_parts = $parts
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = $dir/mail/\${local_part_data}
  maildir_format
  create_directory
  user = nobody
  group = nogroup
  return_path_add
CF
	: >"$dir/log/mainlog"
	chown nobody:nogroup "$dir/log/mainlog"
	unshare -m --propagation private sh -c '
		mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group &&
		LD_LIBRARY_PATH="$1/root/usr/lib/x86_64-linux-gnu" exec "$1/exim" -C "$1/exim.conf" -bd -q1s -oP "$1/mta.pid"' sh "$dir" \
		>"$dir/daemon.log" 2>&1
	wait_port "$port" "$dir/log/mainlog"
}

start_opensmtpd() {
	local dir=$1 port=$2 domain=$3 users=$4
	fetch opensmtpd "$dir"
	mkdir -p "$dir/spool" "$dir/varlib/opensmtpd/empty" "$dir/run" "$dir/mail"
	chown nobody:nogroup "$dir/mail"
	users "$dir" opensmtpd:60101 opensmtpq:60102
	: >"$dir/virtuals"
	: >"$dir/recipients"
	for u in $users; do
		echo "$u@$domain nobody" >>"$dir/virtuals"
		echo "$u@$domain" >>"$dir/recipients"
	done
	cat >"$dir/smtpd.conf" <<CF
table virtuals file:$dir/virtuals
table recipients file:$dir/recipients
smtp limit max-mails ${MTA_MAX_PER_CONN:-100}
smtp max-message-size 100M
listen on 127.0.0.1 port $port hostname mta.$domain
action "local" maildir "$dir/mail/%{dest.user}" virtual <virtuals>
match from any for domain "$domain" rcpt-to <recipients> action "local"
CF
	# -d: in the foreground, logging to DIR/mta.log; unshare execs the
	# shell, which execs smtpd, so $! is smtpd's pid.
	setsid unshare -m --propagation private sh -c '
		mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group &&
		mount --bind "$1/spool" /var/spool && mount --bind "$1/varlib" /var/lib &&
		mount --bind "$1/run" /run && mount --bind "$1/root/usr/libexec" /usr/libexec &&
		exec "$1/root/usr/sbin/smtpd" -d -f "$1/smtpd.conf"' sh "$dir" \
		>"$dir/mta.log" 2>&1 </dev/null &
	echo $! >"$dir/mta.pid"
	wait_port "$port" "$dir/mta.log"
}

case $cmd in
stop)
	dir=$2
	if [ -e "$dir/etc/main.cf" ]; then exec bash "$here/postfix.sh" stop "$dir"; fi
	if [ -s "$dir/mta.pid" ]; then
		# The daemon leads its own session (Exim detaches, OpenSMTPD runs
		# under setsid): stopping the group also ends the processes that
		# serve open connections, as stopping a real MTA does.
		pid=$(cat "$dir/mta.pid")
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.05; done
		kill -KILL -- "-$pid" 2>/dev/null || true
		rm -f "$dir/mta.pid"
	fi
	exit 0 ;;
version)
	[ $# -ge 3 ] || usage
	kind=$2 dir=$3
	case $kind in
	postfix) postconf -d -h mail_version ;;
	exim) dpkg-deb -f "$dir"/debs/exim4-daemon-light_*.deb Version ;;
	opensmtpd) dpkg-deb -f "$dir"/debs/opensmtpd_*.deb Version ;;
	esac
	exit 0 ;;
start) ;;
*) usage ;;
esac

[ $# -ge 4 ] || usage
kind=$2 dir=$3 port=$4
domain=${5:-example.com}
shift 4; [ $# -gt 0 ] && shift
users=${*:-alice bob}
[ "$(id -u)" = 0 ] || { echo "mta.sh needs root" >&2; exit 1; }
mkdir -p "$dir"
chmod 755 "$dir"
dir=$(cd "$dir" && pwd)

case $kind in
postfix) exec bash "$here/postfix.sh" start "$dir" "$port" "$domain" $users ;;
exim) start_exim "$dir" "$port" "$domain" "$users" ;;
opensmtpd) start_opensmtpd "$dir" "$port" "$domain" "$users" ;;
*) usage ;;
esac
