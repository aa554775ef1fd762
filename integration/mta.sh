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
# OpenSMTPD smtp limit max-mails; Postfix has none). MTA_MAX_CONNS, when
# set, is Exim's smtp_accept_max (its limit of simultaneous connections,
# default 20).
#
#   mta.sh fetch [exim|opensmtpd...]   (make deps: the packages, up front)
#
# The packages are kept in a cache, ${XDG_CACHE_HOME:-$HOME/.cache}/smtpgate/debs
# (SMTPGATE_DEB_CACHE overrides it), one file per package and version: a
# cached .deb is used when it is the version apt would fetch and dpkg-deb
# reads it, so later runs need no package download.
#
# Exim finds the user its binary names (Debian-exim) through nss_wrapper
# (LD_PRELOAD, from Debian's libnss-wrapper, fetched the same way) in
# copies of /etc/passwd and /etc/group under DIR. OpenSMTPD hard-codes
# /var/spool/smtpd, its chroot /var/lib/opensmtpd/empty, /var/run/smtpd.sock
# and /usr/libexec/opensmtpd, and no option moves them: it runs in a
# private mount namespace (unshare -m) where those and /etc/passwd and
# /etc/group are bind mounts of files and directories under DIR. Nothing
# outside DIR (and the cache) is changed. unshare -m needs CAP_SYS_ADMIN:
# without it (and for Exim and OpenSMTPD without root) start exits 77
# with the reason, and the tests skip that MTA.
set -eu

usage() { echo "usage: $0 start postfix|exim|opensmtpd DIR PORT [DOMAIN [USERS...]] | stop DIR | version KIND DIR | fetch [KIND...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
here=$(cd "$(dirname "$0")" && pwd)

# The exit status that tells the tests to skip an MTA this machine cannot run.
SKIP=77

packages() {
	case $1 in
	exim) echo "exim4-base exim4-daemon-light libidn12 libnss-wrapper" ;;
	opensmtpd) echo "opensmtpd" ;;
	*) usage ;;
	esac
}

cache=${SMTPGATE_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smtpgate/debs}
versions=

# candidates PKG...: "PKG VERSION" for each package, the version apt would
# fetch (from the local package lists, no download; one apt-cache run).
candidates() {
	apt-cache show --no-all-versions "$@" 2>/dev/null | awk '/^Package: /{p=$2} /^Version: /{print p, $2}'
}

# candidate PKG: its version from $versions (candidates' output).
candidate() {
	echo "$versions" | awk -v p="$1" '$1 == p {print $2; exit}'
}

# valid FILE PKG VERSION: FILE is a .deb of PKG at VERSION that dpkg-deb
# reads to the end (its control and its whole data archive).
valid() {
	[ -s "$1" ] && [ "$(dpkg-deb -f "$1" Package Version 2>/dev/null)" = "$(printf 'Package: %s\nVersion: %s' "$2" "$3")" ] &&
		dpkg-deb --fsys-tarfile "$1" >/dev/null 2>&1
}

# cached PKG: prints the cache's .deb of PKG at the candidate version,
# downloading it when it is missing or does not read. Without package
# lists (a fresh machine) they are refreshed once, and failing that a
# valid cached version of PKG is used.
cached() {
	local pkg=$1 ver f tmp log
	mkdir -p "$cache"
	log=$cache/apt.log
	ver=$(candidate "$pkg")
	if [ -z "$ver" ]; then
		apt-get update >"$log" 2>&1 || true
		versions=$(candidates "$pkg")
		ver=$(candidate "$pkg")
	fi
	if [ -z "$ver" ]; then
		for f in $(ls -t "$cache/${pkg}"_*.deb 2>/dev/null); do
			if valid "$f" "$pkg" "$(dpkg-deb -f "$f" Version 2>/dev/null)"; then echo "$f"; return 0; fi
		done
		echo "no package $pkg in apt's lists (apt-get update failed?) and none cached in $cache; see $log" >&2
		return 1
	fi
	f=$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/g').deb
	valid "$f" "$pkg" "$ver" && { echo "$f"; return 0; }
	# apt-get download writes to the current directory (as root it warns
	# that the _apt user cannot write there, which is harmless). A
	# private directory, then a rename: runs in parallel share the cache.
	tmp=$(mktemp -d "$cache/.download.XXXXXX")
	if ! (cd "$tmp" && apt-get download "$pkg=$ver") >"$tmp/apt.log" 2>&1; then
		apt-get update >>"$tmp/apt.log" 2>&1 || true
		if ! (cd "$tmp" && apt-get download "$pkg=$ver") >>"$tmp/apt.log" 2>&1; then
			echo "apt-get download $pkg=$ver failed:" >&2
			tail -20 "$tmp/apt.log" >&2
			rm -rf "$tmp"
			return 1
		fi
	fi
	local got
	got=$(ls "$tmp"/*.deb 2>/dev/null | head -1)
	if [ -z "$got" ] || ! valid "$got" "$pkg" "$ver"; then
		echo "apt-get download $pkg=$ver gave no readable .deb of that version" >&2
		rm -rf "$tmp"
		return 1
	fi
	mv -f "$got" "$f"
	rm -rf "$tmp"
	echo "$f"
}

# fetch KIND DIR: the packages' files, unpacked under DIR/root; DIR/debs.list
# names the .deb files used.
fetch() {
	local kind=$1 dir=$2 pkg deb
	[ -e "$dir/root/.$kind" ] && return 0
	mkdir -p "$dir/root"
	: >"$dir/debs.list"
	versions=$(candidates $(packages "$kind"))
	for pkg in $(packages "$kind"); do
		deb=$(cached "$pkg") || exit 1
		echo "$deb" >>"$dir/debs.list"
		dpkg -x "$deb" "$dir/root"
	done
	touch "$dir/root/.$kind"
}

# skip REASON: this machine cannot run the MTA; the tests skip it.
skip() {
	echo "$kind cannot run here: $*" >&2
	exit $SKIP
}

# users DIR LINES...: copies of /etc/passwd and /etc/group with users added
# (name:uid), for nss_wrapper (Exim) or the private mount namespace
# (OpenSMTPD).
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
	local libs=$dir/root/usr/lib/x86_64-linux-gnu
	local parts
	parts=$(echo $users | sed 's/ / : /g')
	cat >"$dir/exim.conf" <<CF
exim_path = $dir/exim
exim_user = nobody
exim_group = nogroup
keep_environment = LD_LIBRARY_PATH:LD_PRELOAD:NSS_WRAPPER_PASSWD:NSS_WRAPPER_GROUP
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
smtp_accept_max = ${MTA_MAX_CONNS:-20}
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
	# Exim daemonises and keeps the environment that keep_environment
	# names for the processes it starts (deliveries, queue runs).
	LD_PRELOAD="$libs/libnss_wrapper.so" NSS_WRAPPER_PASSWD="$dir/passwd" NSS_WRAPPER_GROUP="$dir/group" \
		LD_LIBRARY_PATH="$libs" "$dir/exim" -C "$dir/exim.conf" -bd -q1s -oP "$dir/mta.pid" \
		>"$dir/daemon.log" 2>&1
	wait_port "$port" "$dir/log/mainlog"
}

start_opensmtpd() {
	local dir=$1 port=$2 domain=$3 users=$4 why
	if ! why=$(unshare -m --propagation private true 2>&1); then
		skip "it needs a private mount namespace for its hard-coded paths, and unshare -m failed (it needs CAP_SYS_ADMIN): $why"
	fi
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
	exim) dpkg-deb -f "$(grep /exim4-daemon-light_ "$dir/debs.list")" Version ;;
	opensmtpd) dpkg-deb -f "$(grep /opensmtpd_ "$dir/debs.list")" Version ;;
	esac
	exit 0 ;;
fetch)
	shift
	for kind in ${*:-exim opensmtpd}; do
		versions=$(candidates $(packages "$kind"))
		for pkg in $(packages "$kind"); do
			deb=$(cached "$pkg") || { echo "fetching $kind's packages into $cache failed" >&2; exit 1; }
			echo "$kind: $deb"
		done
	done
	exit 0 ;;
start) ;;
*) usage ;;
esac

[ $# -ge 4 ] || usage
kind=$2 dir=$3 port=$4
domain=${5:-example.com}
shift 4; [ $# -gt 0 ] && shift
users=${*:-alice bob}
if [ "$(id -u)" != 0 ]; then
	# Postfix (postfix.sh) fails without root as the rest of the tests
	# do; Exim and OpenSMTPD are skipped.
	case $kind in
	exim|opensmtpd) skip "mta.sh runs it as root (it drops to nobody itself), and this is uid $(id -u)" ;;
	*) echo "mta.sh needs root" >&2; exit 1 ;;
	esac
fi
mkdir -p "$dir"
chmod 755 "$dir"
dir=$(cd "$dir" && pwd)

case $kind in
postfix) exec bash "$here/postfix.sh" start "$dir" "$port" "$domain" $users ;;
exim) start_exim "$dir" "$port" "$domain" "$users" ;;
opensmtpd) start_opensmtpd "$dir" "$port" "$domain" "$users" ;;
*) usage ;;
esac
