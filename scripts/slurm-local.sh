#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to rehearse the SLURM path (hydra/launcher=slurm) and
# to run the tests marked `slurm` against a real scheduler:
#
#   scripts/slurm-local.sh start    install what is missing (apt), configure, start, wait for the node
#   scripts/slurm-local.sh status   which daemons run, the node, the queue
#   scripts/slurm-local.sh stop     cancel every job, wait for an empty queue, stop the daemons
#   scripts/slurm-local.sh optuna-url   the database URL of the `optuna` database, for a search's
#                                   study (hydra.sweeper.storage=...; docs/search.md)
#
# Runs as root, without systemd: munged, mariadbd (bound to 127.0.0.1: SLURM's accounting database,
# and an `optuna` database with its own user for hyperparameter searches whose trials run as jobs),
# slurmdbd, slurmctld and slurmd, each started here and stopped by its PID file. Everything they
# write lives in one state directory, $LENET_FMNIST_SLURM_DIR (default /tmp/lenet-fmnist-slurm);
# /etc/slurm/slurm.conf is made a link to its slurm.conf so that sbatch, squeue and sinfo find the
# cluster (where another slurm.conf is already there, it is left alone: export SLURM_CONF instead).
# A munged that already answers is used, not replaced. Both commands are idempotent: `start` with
# everything running only reports it; a half-running cluster is stopped and started afresh.
#
# The settings make a one-machine cluster quick to test against (see
# docs/sweeps.md, "Rehearsing a SLURM cluster on one machine").
set -euo pipefail

STATE=${LENET_FMNIST_SLURM_DIR:-/tmp/lenet-fmnist-slurm}
DB_PORT=${LENET_FMNIST_SLURM_DB_PORT:-13306} # not 3306: a MariaDB/MySQL of the machine may hold it
TIMEOUT=${LENET_FMNIST_SLURM_TIMEOUT:-60}    # seconds to wait for each daemon, the node, the queue
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CLUSTER=lenetfmnist
PARTITION=local
SYSTEM_CONF=/etc/slurm/slurm.conf
CONF=$STATE/slurm.conf
RUN=$STATE/run           # PID files of the daemons that run as root
DB_RUN=$STATE/mysql-run  # mariadbd runs as user mysql: its socket and PID file
MUNGE_RUN=$STATE/munge   # munged runs as user munge: its PID file and log
LOG=$STATE/log
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged) # in stopping order
OPTUNA_URL=$STATE/optuna-url # mysql+pymysql://optuna:PASSWORD@127.0.0.1:PORT/optuna, readable by root only
export SLURM_CONF=$CONF  # the daemons and commands of this script use this cluster's files

say() { printf 'slurm-local: %s\n' "$*"; }
die() {
    printf 'slurm-local: %s\n' "$*" >&2
    exit 1
}

pid_file() {
    case $1 in
        mariadbd) echo "$DB_RUN/mariadbd.pid" ;;
        munged) echo "$MUNGE_RUN/munged.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

# The PID of daemon $1 when it runs (its PID file names a live process of that name), else nothing.
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# Poll `$@` until it succeeds; after $TIMEOUT seconds fail with $what and the tail of $logfile.
wait_until() {
    local what=$1 logfile=$2
    shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            [[ -r $logfile ]] && tail -n 20 "$logfile" >&2
            die "timed out after ${TIMEOUT}s waiting for $what (log: $logfile)."
        fi
        sleep 0.2
    done
}

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 ||
        die "apt-get install ${missing[*]} failed; see $STATE/apt.log."
}

write_configs() {
    local node password memory
    # The node as slurmd sees it (its sockets, cores and threads), announcing 80% of its memory.
    node=$(slurmd -C | head -n 1)
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    node="${node% RealMemory=*} RealMemory=$((memory * 8 / 10))"
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster for rehearsals and tests.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Job credentials expire after 10 s, not 120: a requeued job waits for that before it restarts.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups without systemd: processes are tracked through /proc and tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Schedule every few seconds, not every minute, and kill a signalled job 5 s after SIGTERM.
SchedulerParameters=bf_interval=2,sched_interval=5
KillWait=5
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# Accounting: submitit reads job states from sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$(hostname -s) Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd reads slurmdbd.conf next to slurm.conf and refuses it unless only its user can read it.
    (
        umask 077
        cat >"$STATE/slurmdbd.conf" <<EOF
# Written by scripts/slurm-local.sh.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
EOF
    )
    echo "$password"
}

start_munge() {
    if munge_answers; then
        running_pid munged >/dev/null || say "using the munged already running"
        return
    fi
    [[ -r /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge "$MUNGE_RUN"
    runuser -u munge -- munged --pid-file="$MUNGE_RUN/munged.pid" --log-file="$MUNGE_RUN/munged.log"
    wait_until "munged" "$MUNGE_RUN/munged.log" munge_answers
}

db() { mariadb --socket="$DB_RUN/mysqld.sock" --user=root "$@"; }

start_database() {
    local password=$1
    install -d -o mysql -g mysql -m 0755 "$STATE/mysql" "$DB_RUN"
    if [[ ! -d $STATE/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed; see $LOG/mariadb-install.log."
    fi
    setsid mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$DB_RUN/mysqld.sock" \
        --pid-file="$DB_RUN/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --skip-log-bin --log-error="$LOG/mariadb.log" </dev/null >>"$LOG/mariadb.log" 2>&1 &
    wait_until "mariadbd" "$LOG/mariadb.log" mariadb-admin --socket="$DB_RUN/mysqld.sock" --silent ping
    # A fresh cluster numbers its jobs from 1 again: rows of an earlier one would match them.
    db -e "DROP DATABASE IF EXISTS slurm_acct_db;
        CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    create_optuna_database fresh
}

# The `optuna` database and its user, for the studies of searches whose trials run as jobs (a
# journal file needs a filesystem every node shares; a database server does not). `fresh` drops
# what an earlier cluster left, as for the accounting database; without it only what is missing
# is created (a cluster started by an older version of this script).
create_optuna_database() {
    local password
    if [[ ${1:-} == fresh ]]; then
        db -e "DROP DATABASE IF EXISTS optuna;"
    elif [[ -s $OPTUNA_URL ]] && db -e "USE optuna;" 2>/dev/null; then
        return
    fi
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    db -e "CREATE DATABASE IF NOT EXISTS optuna;
        CREATE OR REPLACE USER 'optuna'@'127.0.0.1' IDENTIFIED BY '$password';
        GRANT ALL ON optuna.* TO 'optuna'@'127.0.0.1';"
    (
        umask 077
        echo "mysql+pymysql://optuna:$password@127.0.0.1:$DB_PORT/optuna" >"$OPTUNA_URL"
    )
}

optuna_url() {
    [[ -r $OPTUNA_URL ]] || die "no optuna database: start the cluster with $0 start (as root, which may read $OPTUNA_URL)."
    cat "$OPTUNA_URL"
}

cluster_registered() { sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; }
node_state() { sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null; }
node_idle() { [[ $(node_state) == idle ]]; }

link_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        return
    elif [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        say "$SYSTEM_CONF belongs to another cluster and is left alone; to reach this one: export SLURM_CONF=$CONF"
    else
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -s "$CONF" "$SYSTEM_CONF"
    fi
}

all_running() {
    local daemon
    for daemon in slurmd slurmctld slurmdbd mariadbd; do
        running_pid "$daemon" >/dev/null || return 1
    done
    munge_answers
}

any_running() {
    local daemon
    for daemon in "${DAEMONS[@]}"; do
        running_pid "$daemon" >/dev/null && return 0
    done
    return 1
}

start() {
    [[ $(id -u) == 0 ]] || die "start needs root (the daemons run as root here): sudo $0 start"
    if all_running; then
        link_system_conf
        create_optuna_database
        say "already running: node $(hostname -s) is $(node_state || echo 'not answering'); state in $STATE"
        return
    fi
    if any_running; then
        say "part of the cluster runs; stopping it to start afresh"
        stop
    fi
    mkdir -p "$STATE"
    install_packages
    runuser -u mysql -- test -x "$STATE" ||
        die "$STATE cannot be entered by the users mysql and munge; choose another LENET_FMNIST_SLURM_DIR (e.g. under /tmp)."
    # A fresh controller state: job ids restart at 1, no job of an earlier cluster comes back.
    rm -rf "$STATE/ctld" "$STATE/spool" "$RUN"
    mkdir -p "$STATE/ctld" "$STATE/spool" "$RUN" "$LOG"
    local password
    password=$(write_configs)
    start_munge
    start_database "$password"
    slurmdbd
    wait_until "slurmdbd" "$LOG/slurmdbd.log" sacctmgr -n show cluster
    cluster_registered || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    slurmctld -i
    slurmd
    link_system_conf
    wait_until "node $(hostname -s) to be idle" "$LOG/slurmd.log" node_idle
    say "running: node $(hostname -s) idle, partition $PARTITION; state and logs in $STATE"
}

cancel_jobs() {
    local jobs
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
    if ((${#jobs[@]} > 0)); then
        say "cancelling ${#jobs[@]} job(s)"
        scancel "${jobs[@]}" 2>/dev/null || true # a job may end meanwhile
    fi
    # A slurmd stopped under a running job can leave its slurmstepd and the job behind. (Without a
    # slurmd no job can end; the next start begins with an empty controller state anyway.)
    if running_pid slurmd >/dev/null; then
        wait_until "the queue to empty" "$LOG/slurmctld.log" queue_empty
    fi
}

queue_empty() { [[ -z $(squeue -h -o %i 2>/dev/null) ]]; }

stop_daemon() {
    local name=$1 pid
    pid=$(running_pid "$name") || return 0
    kill -TERM "$pid"
    local deadline=$((SECONDS + TIMEOUT))
    while [[ -e /proc/$pid ]]; do
        if ((SECONDS >= deadline)); then
            say "$name (pid $pid) ignored SIGTERM for ${TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    say "stopped $name (pid $pid)"
}

stop() {
    if ! any_running; then
        say "not running; nothing to stop"
    else
        [[ $(id -u) == 0 ]] || die "stop needs root (the daemons run as root here): sudo $0 stop"
        running_pid slurmctld >/dev/null && cancel_jobs
        local daemon
        for daemon in "${DAEMONS[@]}"; do
            stop_daemon "$daemon"
        done
        local steps
        steps=$(pgrep -x slurmstepd | paste -sd ' ' || true)
        [[ -z $steps ]] || say "warning: job processes outlived their slurmd (slurmstepd pids: $steps); end them with kill -9"
    fi
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm "$SYSTEM_CONF"
    fi
}

status() {
    local daemon pid
    for daemon in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$daemon"); then
            say "$daemon running (pid $pid)"
        elif [[ $daemon == munged ]] && munge_answers; then
            say "munged running (not started by this script)"
        else
            say "$daemon stopped"
        fi
    done
    if all_running; then
        say "node $(hostname -s): $(node_state || echo 'not answering'); jobs in the queue: $(squeue -h 2>/dev/null | wc -l)"
        say "state and logs in $STATE"
        return 0
    fi
    return 3 # like an init script: not (fully) running
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    optuna-url) optuna_url ;;
    *) die "usage: $0 start|stop|status|optuna-url   (state directory: \$LENET_FMNIST_SLURM_DIR, default /tmp/lenet-fmnist-slurm)" ;;
esac
