#!/usr/bin/env bash
# tests/slurm/stop-local-slurm.sh -- stop the single-node test cluster started
# by tests/slurm/start-local-slurm.sh, and nothing else.
#
# 1. Cancels jobs still queued or running (so no job process outlives slurmd).
# 2. Stops the daemons recorded in $LOCAL_SLURM_RUN/<name>.pid, in reverse
#    start order: slurmd, slurmctld, slurmdbd, mariadbd, munged.
#    A PID is signalled only if /proc/PID/comm still equals the daemon name
#    (a stale PID file whose PID was reused is just removed). Never kills by
#    name. A munged this script did not start (no PID file) is left alone.
#    Each daemon gets SIGTERM, then SIGKILL if it is still there after 30 s.
#
# Packages, config, the MariaDB datadir (/var/lib/local-slurm) and the
# slurmctld state (/var/spool/slurmctld; job ids keep counting) are kept, so
# the next start takes ~2 s.
#
# Environment knobs:
#   LOCAL_SLURM_RUN=/run/local-slurm   where start-local-slurm.sh put the PID files
#   LOCAL_SLURM_CANCEL_JOBS=1          0 = do not scancel remaining jobs
set -uo pipefail

RUN=${LOCAL_SLURM_RUN:-/run/local-slurm}
CANCEL_JOBS=${LOCAL_SLURM_CANCEL_JOBS:-1}

T0=$(date +%s)
log() { printf '[stop-local-slurm %(%H:%M:%S)T +%ss] %s\n' -1 "$(($(date +%s) - T0))" "$*"; }
[ "$(id -u)" = 0 ] || {
    log "ERROR: must run as root"
    exit 1
}

# ours NAME -> print the PID if $RUN/NAME.pid names a live process called NAME
ours() {
    local pf=$RUN/$1.pid pid
    [ -s "$pf" ] || return 1
    pid=$(cat "$pf")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}
# running PID NAME -> true while PID exists, is called NAME and is not a zombie
running() {
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# ---------------------------------------------------------- cancel jobs ----
if [ "$CANCEL_JOBS" = 1 ] && ours slurmctld >/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 1 60); do
            [ -z "$(squeue -h -t PD,R,CG -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
        left=$(squeue -h -t PD,R,CG -o %i 2>/dev/null | tr '\n' ' ')
        [ -n "${left// /}" ] && log "WARNING: jobs still not finished after 30 s: $left"
    else
        log "no jobs to cancel"
    fi
fi

# ------------------------------------------------------------ daemons ------
stop_one() { # stop_one NAME
    local name=$1 pf=$RUN/$1.pid pid comm
    if [ ! -s "$pf" ]; then
        log "$name: no PID file, not started by us; left alone"
        return 0
    fi
    pid=$(cat "$pf")
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [ -z "$comm" ]; then
        log "$name: pid $pid already gone; removing stale PID file"
        rm -f "$pf"
        return 0
    fi
    if [ "$comm" != "$name" ]; then
        log "$name: pid $pid is now '$comm', not ours; left alone, PID file removed"
        rm -f "$pf"
        return 0
    fi
    log "$name: SIGTERM to pid $pid"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do
        running "$pid" "$name" || break
        sleep 0.1
    done
    if running "$pid" "$name"; then
        log "$name: pid $pid still there after 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    rm -f "$pf"
    log "$name: stopped"
}

stop_one slurmd
stop_one slurmctld
stop_one slurmdbd
stop_one mariadbd
stop_one munged
log "done in $(($(date +%s) - T0))s"
