#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway (S3) on loopback,
# to run the bucket tests against Ceph RGW instead of versitygw.
#
#   contrib/ceph-rgw/run.sh test [go test flags]   start, run the bucket tests, tear down
#   eval "$(contrib/ceph-rgw/run.sh start)"        start, export S3TEST_* into this shell
#   contrib/ceph-rgw/run.sh stop                   tear down what start left running
#
# For Debian 12 (bookworm), as root. Installs Ceph 16.2 (Pacific) from
# Debian's own packages when missing. Runs one monitor, one OSD whose
# objects live in memory (memstore: no disk), and radosgw (beast frontend),
# all on 127.0.0.1, with every file in one temp directory and no systemd.
#
# Settings (environment):
#   RGW_PORT     port of the S3 endpoint            (default 8000)
#   MON_PORT     port of the monitor (msgr2)        (default 13300)
#   MEMSTORE_MB  size of the in-memory OSD, in MiB  (default 2048)
#   CEPH_RGW_DIR where the cluster lives            (default a new mktemp -d)
#   CEPH_RGW_TIMEOUT seconds to wait for each daemon (default 120)
#
# start prints only the export lines on stdout; progress goes to stderr.
# The directory of a started cluster is recorded in
# $TMPDIR/theater-storefs-ceph-rgw.dir, which stop reads. When the tests
# fail, the daemons' logs are kept in $TMPDIR/theater-storefs-ceph-rgw-logs.
set -euo pipefail

RGW_PORT=${RGW_PORT:-8000}
MON_PORT=${MON_PORT:-13300}
MEMSTORE_MB=${MEMSTORE_MB:-2048}
TIMEOUT=${CEPH_RGW_TIMEOUT:-120}
STATE_FILE=${TMPDIR:-/tmp}/theater-storefs-ceph-rgw.dir
LOGS_KEPT=${TMPDIR:-/tmp}/theater-storefs-ceph-rgw-logs

# The S3 user the tests use: a throwaway cluster, so fixed keys do.
S3_USER=theater-test
S3_ACCESS_KEY=theater-test
S3_SECRET_KEY=theater-test-secret

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

log() { echo "ceph-rgw: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# install_ceph installs Debian's Ceph packages when a command is missing.
# ceph-mgr is not needed: RGW and the OSD work without it (ceph -s then
# warns "no active mgr" and shows PG states as unknown, which is harmless
# here), and it would bring in a few hundred MB of Python.
install_ceph() {
	local missing=()
	command -v ceph-mon >/dev/null || missing+=(ceph-mon)
	command -v ceph-osd >/dev/null || missing+=(ceph-osd)
	command -v radosgw >/dev/null || missing+=(radosgw)
	command -v ceph >/dev/null || missing+=(ceph-common)
	command -v curl >/dev/null || missing+=(curl)
	[ ${#missing[@]} -eq 0 ] && return
	[ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]}"
	log "installing ${missing[*]} with apt-get"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# wait_for waits up to $TIMEOUT seconds for a command to succeed.
wait_for() {
	local what=$1
	shift
	local deadline=$((SECONDS + TIMEOUT))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			log "no $what after ${TIMEOUT}s; the last lines of the logs in $DIR/log:"
			tail -n 20 "$DIR"/log/* >&2 || true
			return 1
		fi
		sleep 1
	done
}

# ceph runs the CLI as client.admin of this cluster.
ceph() { command ceph -c "$DIR/ceph.conf" --connect-timeout 10 "$@"; }

write_conf() {
	cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
# msgr2 only, on loopback: nothing listens on the v1 port 6789 or on the
# host's other addresses.
ms bind msgr1 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1

# cephx on, as on a real cluster, so that keyrings and caps are exercised.
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false

# Every file in the temp directory (\$name is e.g. mon.a, osd.0, client.rgw).
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/\$name
osd data = $DIR/\$name
keyring = $DIR/\$name/keyring

# One OSD: pools of one replica, placed on it (not across hosts), and few
# PGs so that RGW's seven pools stay under the per-OSD PG limit. Ceph
# refuses size 1 unless the monitor is told to allow it.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off

# The monitor stops when its disk is nearly full (5% free by default); a
# throwaway cluster need not guard the host's disk.
mon data avail crit = 1
mon data avail warn = 2

[osd]
# memstore keeps objects in memory: no disk or block device needed. Its
# size is what the OSD reports as capacity; objects beyond it fail as full.
osd objectstore = memstore
memstore device bytes = $((MEMSTORE_MB * 1024 * 1024))
# memstore has no journal; keep the OSD small on a 2-core machine.
osd op num shards = 2
osd op num threads per shard = 1

[client.admin]
keyring = $DIR/admin.keyring

[client.rgw]
# beast frontend on loopback only. Path-style requests, which the tests
# use, need no rgw dns name.
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/\$name
# One zone and no other: no sync, no dynamic resharding, no usage log.
rgw run sync thread = false
rgw dynamic resharding = false
rgw enable usage log = false
# Garbage of overwritten and deleted objects is collected within seconds,
# so that a memstore OSD does not fill during long runs.
rgw gc obj min wait = 10
rgw gc processor period = 10
debug rgw = 1
EOF
}

start() {
	install_ceph
	# Else the readiness check below would find the other server.
	if curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/"; then
		die "something already listens on 127.0.0.1:$RGW_PORT; set RGW_PORT"
	fi
	if [ -n "${CEPH_RGW_DIR:-}" ]; then
		DIR=$CEPH_RGW_DIR
		mkdir -p "$DIR"
	else
		DIR=$(mktemp -d "${TMPDIR:-/tmp}/ceph-rgw.XXXXXX")
	fi
	[ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"
	echo "$DIR" >"$STATE_FILE"
	mkdir -p "$DIR/run" "$DIR/log" "$DIR/mon.a" "$DIR/osd.0" "$DIR/client.rgw"
	FSID=$(cat /proc/sys/kernel/random/uuid)
	write_conf
	log "cluster $FSID in $DIR"

	# Keys: the monitors' shared key, and client.admin with every cap,
	# which the monitor learns at mkfs.
	ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool --create-keyring "$DIR/admin.keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
	ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/admin.keyring" >/dev/null

	# The monitor: a monmap of one, then its store, then the daemon.
	monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
	ceph-mon -c "$DIR/ceph.conf" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring"
	# setsid: out of the terminal's process group, so that a Ctrl-C reaches
	# the tests but not the daemons, which stop then takes down in order.
	setsid ceph-mon -c "$DIR/ceph.conf" -i a 2>>"$DIR/log/mon.a.stderr"
	wait_for "monitor" ceph mon stat
	log "monitor up on 127.0.0.1:$MON_PORT"

	# The OSD: registered with the monitor along with its key, its data
	# directory made (for memstore: just metadata), then the daemon.
	local osd_uuid osd_key id
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	osd_key=$(ceph-authtool --gen-print-key)
	id=$(echo "{\"cephx_secret\": \"$osd_key\"}" | ceph osd new "$osd_uuid" -i -)
	[ "$id" = 0 ] || die "expected osd.0, got osd.$id"
	ceph-authtool --create-keyring "$DIR/osd.0/keyring" --name osd.0 --add-key "$osd_key" >/dev/null
	ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$DIR/log/osd.0.stderr"
	setsid ceph-osd -c "$DIR/ceph.conf" -i 0 2>>"$DIR/log/osd.0.stderr"
	wait_for "OSD up" osd_up
	log "osd.0 up (memstore, $MEMSTORE_MB MiB)"

	# The gateway: a key that may make its pools, then the daemon, which
	# makes the default realm, zone and pools on its first start.
	ceph auth get-or-create client.rgw mon 'allow rw' osd 'allow rwx' >"$DIR/client.rgw/keyring"
	setsid radosgw -c "$DIR/ceph.conf" -n client.rgw 2>>"$DIR/log/client.rgw.stderr"
	wait_for "radosgw on 127.0.0.1:$RGW_PORT" curl -sf "http://127.0.0.1:$RGW_PORT/"
	log "radosgw up on 127.0.0.1:$RGW_PORT"

	radosgw-admin -c "$DIR/ceph.conf" user create --uid="$S3_USER" --display-name="Theater tests" \
		--access-key="$S3_ACCESS_KEY" --secret="$S3_SECRET_KEY" >/dev/null
	cat >"$DIR/env" <<EOF
export S3TEST_ENDPOINT=http://127.0.0.1:$RGW_PORT
export S3TEST_ACCESS_KEY=$S3_ACCESS_KEY
export S3TEST_SECRET_KEY=$S3_SECRET_KEY
EOF
	log "S3 user $S3_USER ready, setup took ${SECONDS}s"
}

osd_up() { ceph osd stat -f json | grep -q '"num_up_osds":1'; }

# stop kills the daemons by their pid files and removes the directory.
stop() {
	DIR=${DIR:-${CEPH_RGW_DIR:-$(cat "$STATE_FILE" 2>/dev/null || true)}}
	if [ -z "$DIR" ] || [ ! -d "$DIR" ]; then
		log "no cluster to stop"
		rm -f "$STATE_FILE"
		return 0
	fi
	# The gateway first, while the OSD can still answer what it has in
	# flight, then the OSD, then the monitor; each is killed outright if it
	# takes more than 10 s.
	local name pid deadline
	for name in client.rgw osd.0 mon.a; do
		[ -f "$DIR/run/$name.pid" ] || continue
		pid=$(cat "$DIR/run/$name.pid")
		# Only the daemon of this cluster, not a process that took its pid.
		grep -qF "$DIR/ceph.conf" "/proc/$pid/cmdline" 2>/dev/null || continue
		kill "$pid" 2>/dev/null || continue
		deadline=$((SECONDS + 10))
		while kill -0 "$pid" 2>/dev/null; do
			if [ $SECONDS -ge $deadline ]; then
				log "$name did not stop within 10 s; killing it"
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
	done
	rm -rf "$DIR"
	rm -f "$STATE_FILE"
	log "stopped; removed $DIR"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
# Ctrl-C or kill: exit, so that the EXIT trap below tears down.
trap 'exit 130' INT
trap 'exit 143' TERM
case $cmd in
start)
	# On failure, leave nothing half started behind.
	trap 'stop' EXIT
	start
	trap - EXIT
	cat "$DIR/env"
	log "stop it with: $0 stop"
	;;
test)
	[ -n "$(cat "$STATE_FILE" 2>/dev/null || true)" ] && [ -d "$(cat "$STATE_FILE")" ] &&
		die "a cluster is already running in $(cat "$STATE_FILE"); $0 stop it first"
	# Torn down however the tests end, passed, failed or interrupted.
	trap 'stop' EXIT
	start
	# shellcheck source=/dev/null
	. "$DIR/env"
	cd "$REPO"
	log "go test against $S3TEST_ENDPOINT"
	status=0
	# Every test of the bucket backend, and the integration tests that
	# use a bucket (the others do not).
	go test -count=1 ./store/remote/ "$@" || status=$?
	go test -count=1 ./integration/ -run 'Bucket' "$@" || status=$?
	if [ $status -ne 0 ]; then
		# The daemons' logs outlive the cluster, for a look at what RGW did.
		rm -rf "$LOGS_KEPT"
		cp -r "$DIR/log" "$LOGS_KEPT"
		log "tests failed; the daemons' logs are kept in $LOGS_KEPT"
	fi
	exit $status
	;;
stop)
	stop
	;;
*)
	usage
	;;
esac
