#!/bin/bash
# Installs Haraka (the npm package "Haraka") for the benchmark's comparison
# row and prints the directory that holds node_modules/Haraka.
#
#   integration/bench/haraka/install.sh [VERSION]   default: $HARAKA_VERSION, else 3.3.4
#
# The install (about 50 MB) is kept in
# ${XDG_CACHE_HOME:-~/.cache}/smtpgate-bench/haraka/VERSION and reused by
# later runs. HARAKA_CACHE=0 installs into a new temp dir instead (its path
# is printed; the caller removes it).
set -euo pipefail

ver=${1:-${HARAKA_VERSION:-3.3.4}}
die() { echo "haraka-install: $*" >&2; exit 1; }

command -v node >/dev/null || die "node not found (Haraka needs Node.js 20 or later; Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm not found (Debian: apt-get install npm)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "node $(node --version) is too old: Haraka $ver needs Node.js 20 or later"

ok() { [ -f "$1/node_modules/Haraka/bin/haraka" ] && [ -f "$1/node_modules/Haraka/package.json" ]; }

if [ "${HARAKA_CACHE:-1}" = 0 ]; then
	dest=
	work=$(mktemp -d "${TMPDIR:-/tmp}/smtpgate-bench-haraka.XXXXXX")
else
	parent=${XDG_CACHE_HOME:-$HOME/.cache}/smtpgate-bench/haraka
	dest=$parent/$ver
	if ok "$dest"; then echo "$dest"; exit 0; fi
	mkdir -p "$parent" || die "cannot create $parent"
	# Install beside the cache entry and rename it into place, so that an
	# interrupted install never leaves a half-filled entry.
	work=$(mktemp -d "$parent/.install.XXXXXX")
fi
trap 'rm -rf "$work"' EXIT

echo "haraka-install: npm install Haraka@$ver${dest:+ (cached in $dest)}" >&2
if ! (cd "$work" && npm install --no-audit --no-fund --no-save --loglevel=error "Haraka@$ver") >"$work/npm.log" 2>&1; then
	echo "haraka-install: npm install Haraka@$ver failed; npm said:" >&2
	tail -20 "$work/npm.log" >&2
	exit 1
fi
rm -f "$work/npm.log"
ok "$work" || die "npm install Haraka@$ver finished but node_modules/Haraka/bin/haraka is missing"
got=$(node -p 'require(process.argv[1]).version' "$work/node_modules/Haraka/package.json")
[ "$got" = "$ver" ] || echo "haraka-install: asked for $ver, npm installed $got" >&2

if [ -n "$dest" ]; then
	rm -rf "$dest"
	mv "$work" "$dest" || die "cannot move the install to $dest"
else
	dest=$work
fi
trap - EXIT
echo "$dest"
