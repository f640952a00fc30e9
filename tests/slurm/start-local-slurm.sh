#!/usr/bin/env bash
# tests/slurm/start-local-slurm.sh -- start a real, single-node SLURM cluster
# on this machine so that wormflow's SLURM profile can be tested end to end
# (`snakemake --profile profiles/slurm ...` submits with sbatch and polls sacct).
#
# Target: Debian 12 (bookworm), run as root, works without systemd and inside
# containers / gVisor (no cgroups are used). What it sets up:
#
#   munged      authentication (system key /etc/munge/munge.key)
#   mariadbd    a PRIVATE MariaDB (own datadir + socket, 127.0.0.1:$DB_PORT);
#               never touches a system MySQL/MariaDB
#   slurmdbd    accounting daemon; needed because the executor plugin polls job
#               states with `sacct`, and sacct only works with slurmdbd
#   slurmctld   controller;  slurmd  the one compute node (hostname -s)
#
# The node offers all CPUs, ~90 % of available memory and N fake GPUs
# (gres gpu:<type>:N, each backed by a /dev/null-like character device), so
# GPU requests (`--gpus=1`) are scheduled and accounted (sacct AllocTRES shows
# gres/gpu=1) although the machine has no GPU. Two by default, so that two
# 1-CPU GPU jobs can run side by side on a 2-CPU machine; where mknod is not
# permitted the default falls back to one (backed by /dev/null).
#
# Idempotent: packages already installed are not reinstalled, daemons already
# running (as recorded in our PID files) are left running; the config files are
# rewritten and, if they changed, `scontrol reconfigure` is issued; if the node
# definition changed (CPUs, memory, GPUs), slurmctld and slurmd are restarted
# instead (reconfigure does not apply that). Re-running on a running cluster
# takes ~1 s.
#
# Every daemon started here records its PID in $RUN/<name>.pid;
# tests/slurm/stop-local-slurm.sh stops exactly those and nothing else.
#
# Environment knobs (all optional):
#   LOCAL_SLURM_PARTITION=debug        name of the single, default partition
#   LOCAL_SLURM_FAKE_GPUS=2            number of fake GPUs on the node (0 = none; default
#                                      2, or 1 where mknod is not permitted)
#   LOCAL_SLURM_GPU_TYPE=fakegpu       gres type, i.e. what `gpu_model` would name
#   LOCAL_SLURM_CPUS=$(nproc)          CPUs of the node
#   LOCAL_SLURM_MEM_MB=<90% MemTotal>  RealMemory of the node (must be <= what
#                                      slurmd detects, else the node is INVAL)
#   LOCAL_SLURM_DB_PORT=3307           loopback port of the private MariaDB
#   LOCAL_SLURM_RUN=/run/local-slurm   PID files, MariaDB socket, this script's log
#   LOCAL_SLURM_DATA=/var/lib/local-slurm  MariaDB datadir, fake GPU devices
#   LOCAL_SLURM_WAIT_S=60              how long to wait for the node to be idle
#
# Ports used (SLURM defaults, all daemons on this host): 6817 slurmctld,
# 6818 slurmd, 6819 slurmdbd, plus $LOCAL_SLURM_DB_PORT for MariaDB.
set -euo pipefail

PARTITION=${LOCAL_SLURM_PARTITION:-debug}
FAKE_GPUS=${LOCAL_SLURM_FAKE_GPUS:-2}
GPU_TYPE=${LOCAL_SLURM_GPU_TYPE:-fakegpu}
CPUS=${LOCAL_SLURM_CPUS:-$(nproc)}
# default: 90 % of MemTotal, rounded down to 256 MB, so that re-runs write the same config
MEM_MB=${LOCAL_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", int($2 / 1024 * 0.9 / 256) * 256}' /proc/meminfo)}
DB_PORT=${LOCAL_SLURM_DB_PORT:-3307}
RUN=${LOCAL_SLURM_RUN:-/run/local-slurm}
DATA=${LOCAL_SLURM_DATA:-/var/lib/local-slurm}
WAIT_S=${LOCAL_SLURM_WAIT_S:-60}
CLUSTER=localcluster
HOST=$(hostname -s)
DB_PASS=slurmdb-local-only # MariaDB listens on 127.0.0.1 only; throwaway test credential
SLURM_LOGDIR=/var/log/slurm

T0=$(date +%s)
log() { printf '[start-local-slurm %(%H:%M:%S)T +%ss] %s\n' -1 "$(($(date +%s) - T0))" "$*"; }
die() {
    log "ERROR: $*"
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
case "$FAKE_GPUS" in '' | *[!0-9]*) die "LOCAL_SLURM_FAKE_GPUS must be a number" ;; esac

# ours NAME -> true if $RUN/NAME.pid names a live process whose comm is NAME.
# (Checking the process name guards against a stale PID file whose PID has
# been reused by an unrelated process, e.g. after the machine was restarted.)
# (A zombie -- exited, not yet reaped by PID 1 -- does not count.)
ours() {
    local pf=$RUN/$1.pid pid
    [ -s "$pf" ] || return 1
    pid=$(cat "$pf")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
# wait_for SECONDS CMD... -> poll CMD every 0.2 s until it succeeds or time is up
wait_for() {
    local n=$(($1 * 5))
    shift
    for _ in $(seq 1 "$n"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}
# write_if_changed FILE -> replace FILE by stdin if different; returns 0 if changed
write_if_changed() {
    local new
    new=$(mktemp "$1.XXXXXX")
    cat >"$new"
    if [ -f "$1" ] && cmp -s "$new" "$1"; then
        rm -f "$new"
        return 1
    fi
    mv "$new" "$1"
    return 0
}

log "host=$HOST partition=$PARTITION cpus=$CPUS mem=${MEM_MB}MB fake_gpus=$FAKE_GPUS($GPU_TYPE) run=$RUN data=$DATA"

# ----------------------------------------------------------------- packages --
PKGS="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    # Keep the packages' maintainer scripts from starting munge/slurm/mariadb
    # with their default configs (they would on a host where systemd is PID 1).
    # Only put our own policy-rc.d in place if there is none; remove it after.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, from wormflow tests/slurm/start-local-slurm.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    if [ "$own_policy" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    log "packages installed"
else
    log "packages already installed"
fi

mkdir -p "$RUN" "$DATA" /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$SLURM_LOGDIR"
chown slurm:slurm /var/spool/slurmctld "$SLURM_LOGDIR"
chmod 755 "$RUN"

# ------------------------------------------------------------------- config --
config_changed=0

# Fake GPUs. slurmd needs one File= per GPU and it must be a character device:
# a count-only gpu gres is reported as 0 and the node goes INVAL; a regular
# file is rejected ("not a valid character or block device"). A char device
# with /dev/null's numbers (c 1 3) works; where mknod is not permitted only
# one GPU is possible, backed by /dev/null itself (slurmd rejects duplicates).
GRES_TYPES=""
NODE_GRES=""
ACCT_TRES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
    GRES_TYPES="GresTypes=gpu"
    ACCT_TRES="AccountingStorageTRES=gres/gpu" # sacct AllocTRES shows gres/gpu=N
    mkdir -p "$DATA/dev"
    devs=""
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
        dev=$DATA/dev/fakegpu$i
        if [ ! -c "$dev" ]; then
            rm -f "$dev"
            if ! mknod -m 666 "$dev" c 1 3 2>/dev/null; then
                if [ "$FAKE_GPUS" != 1 ] && [ -n "${LOCAL_SLURM_FAKE_GPUS:-}" ]; then
                    die "mknod not permitted here; only LOCAL_SLURM_FAKE_GPUS=1 (backed by /dev/null) is possible"
                fi
                [ "$FAKE_GPUS" = 1 ] || log "mknod not permitted here: 1 fake GPU (backed by /dev/null) instead of $FAKE_GPUS"
                FAKE_GPUS=1
                devs=/dev/null
                break
            fi
        fi
        devs="$devs $dev"
    done
    NODE_GRES="Gres=gpu:${GPU_TYPE}:${FAKE_GPUS}"
    gres_lines="AutoDetect=off"
    for dev in $devs; do
        gres_lines="$gres_lines
NodeName=$HOST Name=gpu Type=$GPU_TYPE File=$dev"
    done
    if printf '# written by wormflow tests/slurm/start-local-slurm.sh\n%s\n' "$gres_lines" |
        write_if_changed /etc/slurm/gres.conf; then config_changed=1; fi
else
    [ -e /etc/slurm/gres.conf ] && {
        rm -f /etc/slurm/gres.conf
        config_changed=1
    }
fi
[ -f /etc/slurm/gres.conf ] && chmod 644 /etc/slurm/gres.conf

# the node definition (CPUs, memory, GPU count) before this run, to see whether it changes
node_before=$(grep -s '^NodeName=' /etc/slurm/slurm.conf || true)
if write_if_changed /etc/slurm/slurm.conf <<EOF
# written by wormflow tests/slurm/start-local-slurm.sh -- single-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No cgroups (containers / gVisor): track processes via /proc, confine nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$SLURM_LOGDIR/slurmctld.log
SlurmdLogFile=$SLURM_LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
# cons_tres is needed for --gpus; CR_CPU_Memory schedules CPUs (not whole cores)
# and memory, so two 1-CPU jobs can share a 2-CPU node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Accounting through slurmdbd: makes sacct work (the executor plugin's default
# status command) and records AllocTRES. (AccountingStorageTRES=gres/gpu is
# fatal for slurmctld without slurmdbd.)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# Store the job comment: the plugin puts rule + wildcards there
# (--comment rule_<rule>_wildcards_<wildcards>); the tests read it with sacct.
# job_env: keep the environment each batch script was launched with, so the
# tests can check what reached the jobs (sacct -j ID --env-vars).
AccountingStoreFlags=job_comment,job_env
JobCompType=jobcomp/none
$GRES_TYPES
$ACCT_TRES
InactiveLimit=0
KillWait=30
# Finished jobs stay visible to squeue for 10 min. The plugin silently
# switches slurm-status-command=squeue back to sacct when
# MinJobAge < 3 * slurm-init-seconds-before-status-checks.
MinJobAge=600
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $NODE_GRES State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
then config_changed=1; fi
chmod 644 /etc/slurm/slurm.conf

if write_if_changed /etc/slurm/slurmdbd.conf <<EOF
# written by wormflow tests/slurm/start-local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$SLURM_LOGDIR/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
then config_changed=1; fi
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf # slurmdbd refuses a world-readable file
log "config written to /etc/slurm (changed: $config_changed)"

# -------------------------------------------------------------------- munge --
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    log "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
if ours munged; then
    log "munged already running (ours, pid $(cat "$RUN/munged.pid"))"
elif munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    # Not recorded in $RUN, so the stop script will leave it alone.
    log "a munged not started by this script already answers; using it"
    rm -f "$RUN/munged.pid"
else
    rm -f /run/munge/munged.pid "$RUN/munged.pid"
    runuser -u munge -- /usr/sbin/munged # forks into the background
    wait_for 10 test -s /run/munge/munged.pid || die "munged did not write its PID file"
    cp /run/munge/munged.pid "$RUN/munged.pid"
    munge -n | unmunge >/dev/null || die "munge self-test failed"
    log "munged started (pid $(cat "$RUN/munged.pid"))"
fi

# ------------------------------------------------------ private MariaDB ----
DBDIR=$DATA/mysql
DBRUN=$RUN/mysql
DBSOCK=$DBRUN/mysqld.sock
mkdir -p "$DBRUN"
chown mysql:mysql "$DBRUN"
if [ ! -d "$DBDIR/mysql" ]; then
    log "initialising private MariaDB datadir $DBDIR"
    mkdir -p "$DBDIR"
    chown mysql:mysql "$DBDIR"
    mariadb-install-db --user=mysql --datadir="$DBDIR" --skip-test-db \
        --auth-root-authentication-method=socket >"$RUN/mariadb-install-db.log" 2>&1 ||
        {
            cat "$RUN/mariadb-install-db.log"
            die "mariadb-install-db failed"
        }
fi
if ours mariadbd; then
    log "mariadbd already running (ours, pid $(cat "$RUN/mariadbd.pid"))"
else
    rm -f "$RUN/mariadbd.pid" "$DBRUN/mysqld.pid"
    # --no-defaults: ignore /etc/mysql/*; nothing here can collide with a
    # system MariaDB (own datadir, socket, pid file, loopback port).
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DBDIR" \
        --socket="$DBSOCK" --pid-file="$DBRUN/mysqld.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --log-error="$DBRUN/mariadbd.err" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        >/dev/null 2>&1 </dev/null &
    wait_for 30 mariadb-admin --no-defaults --socket="$DBSOCK" ping ||
        {
            tail -20 "$DBRUN/mariadbd.err" || true
            die "mariadbd did not come up"
        }
    wait_for 5 test -s "$DBRUN/mysqld.pid" || die "mariadbd wrote no PID file"
    cp "$DBRUN/mysqld.pid" "$RUN/mariadbd.pid"
    log "mariadbd started (pid $(cat "$RUN/mariadbd.pid"), 127.0.0.1:$DB_PORT)"
fi
mariadb --no-defaults --socket="$DBSOCK" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF

# ----------------------------------------------------------------- slurmdbd --
if ours slurmdbd; then
    log "slurmdbd already running (ours, pid $(cat "$RUN/slurmdbd.pid"))"
else
    rm -f "$RUN/slurmdbd.pid"
    /usr/sbin/slurmdbd # daemonizes, writes $RUN/slurmdbd.pid
    wait_for 10 test -s "$RUN/slurmdbd.pid" || die "slurmdbd wrote no PID file"
    log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
fi
wait_for 30 sacctmgr -n list cluster ||
    {
        tail -20 "$SLURM_LOGDIR/slurmdbd.log" || true
        die "slurmdbd does not answer sacctmgr"
    }
# Registering the cluster also creates account 'root' with user 'root', so the
# profiles' `slurm_account: root` passes the plugin's sacctmgr check.
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "registered cluster '$CLUSTER' in slurmdbd"
fi

# ------------------------------------------------------- slurmctld + slurmd --
# A changed node definition (CPUs, memory, GPUs) is not applied by `scontrol
# reconfigure`: restart our slurmctld and slurmd (state and jobs survive).
node_after=$(grep '^NodeName=' /etc/slurm/slurm.conf)
if [ "$node_before" != "$node_after" ] && { ours slurmctld || ours slurmd; }; then
    log "node definition changed: restarting slurmd and slurmctld"
    for name in slurmd slurmctld; do
        if ours "$name"; then
            pid=$(cat "$RUN/$name.pid")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 150); do
                [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] &&
                    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
                sleep 0.2
            done
            rm -f "$RUN/$name.pid"
        fi
    done
    config_changed=0 # the fresh daemons read the new config
fi
if ours slurmctld; then
    if [ "$config_changed" = 1 ]; then
        log "slurmctld already running (pid $(cat "$RUN/slurmctld.pid")); config changed: scontrol reconfigure"
        scontrol reconfigure || log "WARNING: scontrol reconfigure failed"
    else
        log "slurmctld already running (ours, pid $(cat "$RUN/slurmctld.pid"))"
    fi
else
    rm -f "$RUN/slurmctld.pid"
    /usr/sbin/slurmctld # daemonizes, writes $RUN/slurmctld.pid
    wait_for 10 test -s "$RUN/slurmctld.pid" || die "slurmctld wrote no PID file"
    log "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"
fi
# slurmctld can die right after daemonizing (fatal config error): check it answers.
wait_for 30 sh -c 'scontrol ping | grep -q UP' ||
    {
        tail -20 "$SLURM_LOGDIR/slurmctld.log" || true
        die "slurmctld does not answer 'scontrol ping'"
    }
if ours slurmd; then
    log "slurmd already running (ours, pid $(cat "$RUN/slurmd.pid"))"
else
    rm -f "$RUN/slurmd.pid"
    /usr/sbin/slurmd # daemonizes, writes $RUN/slurmd.pid
    wait_for 10 test -s "$RUN/slurmd.pid" || die "slurmd wrote no PID file"
    log "slurmd started (pid $(cat "$RUN/slurmd.pid"))"
fi

# -------------------------------------------------------- wait for the node --
state=""
resumed=0
deadline=$(($(date +%s) + WAIT_S))
while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 | tr -d '*~#')
    case "$state" in
    idle | mix | alloc | comp) break ;;
    inval | drain | drng | down)
        # e.g. left DOWN by an unclean stop: ask once to return it to service
        if [ "$resumed" = 0 ]; then
            log "node $HOST is '$state'; scontrol update state=resume"
            scontrol update nodename="$HOST" state=resume 2>/dev/null || true
            resumed=1
        fi
        ;;
    esac
    sleep 0.5
done
case "$state" in
idle | mix | alloc | comp) ;;
*)
    sinfo -R || true
    tail -20 "$SLURM_LOGDIR/slurmctld.log" || true
    tail -20 "$SLURM_LOGDIR/slurmd.log" || true
    die "node $HOST not usable after ${WAIT_S}s (state '$state')"
    ;;
esac

log "cluster up: node $HOST state=$state, partition $PARTITION, fake GPUs $FAKE_GPUS, total $(($(date +%s) - T0))s"
sinfo -o "%P %a %D %t %N %c %m %G"
log "stop it with: bash tests/slurm/stop-local-slurm.sh"
