#!/usr/bin/env bash
# Start (installing and configuring first when needed) a single-node Slurm on this machine, for testing
# `snakemake --profile profiles/slurm` end to end. Debian/Ubuntu, root, no systemd needed. Idempotent: a second run
# leaves running daemons alone and restarts only those whose configuration changed.
#
#   sudo bash workflow/tools/local-slurm/start.sh      # ~10 s of apt on a fresh machine, ~3 s to start
#   sinfo; sbatch -p gpu --gpus=1 --wrap 'echo $CUDA_VISIBLE_DEVICES'
#   sudo bash workflow/tools/local-slurm/stop.sh
#
# What it sets up (everything on 127.0.0.1, node name `localhost`):
#   munged, slurmctld, slurmd; with accounting (default) also MariaDB + slurmdbd, so that `sacct` answers.
#   Partitions `cpu` (default) and `gpu` on the one node, matching config.yaml's `slurm:` defaults.
#   LOCAL_SLURM_GPUS fake GPUs (default 2) declared as GRES `gpu` backed by /dev/null-like character devices:
#   jobs that ask for GPUs get CUDA_VISIBLE_DEVICES, nothing more (there is no real GPU).
# Environment knobs:
#   LOCAL_SLURM_ACCOUNTING=0   skip MariaDB/slurmdbd (then sacct fails: use `slurm-status-command: squeue`)
#   LOCAL_SLURM_GPUS=N         number of fake GPUs (default 2)
#   LOCAL_SLURM_NO_INSTALL=1   never call apt-get (fail if a package is missing)
#   LOCAL_SLURM_NODES=N        N > 1: nodes n1..nN, one slurmd each on 127.0.0.1 (port 17000 + i), for multi-node
#                              jobs (`srun` over nodes, torchrun rendezvous); default 1: the node `localhost`
# Logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd,launch}.log (slurmd-n<i>.log with several nodes)
set -euo pipefail
ACCT=${LOCAL_SLURM_ACCOUNTING:-1}
NGPU=${LOCAL_SLURM_GPUS:-2}
NODES=${LOCAL_SLURM_NODES:-1}
R=/run/slurm L=/var/log/slurm G=/var/lib/slurm-local
log() { echo "[local-slurm] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root (it installs packages and writes /etc/slurm)"; exit 2; }
case $NGPU in ''|*[!0-9]*) log "LOCAL_SLURM_GPUS must be a number"; exit 2 ;; esac
case $NODES in ''|*[!0-9]*|0) log "LOCAL_SLURM_NODES must be a positive number"; exit 2 ;; esac

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # stop the daemon of a PID file, wait for it to go
  alive "$1" || return 0
  local p; p=$(cat "$1"); kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || { rm -f "$1"; return 0; }; sleep .2; done
  kill -9 "$p" 2>/dev/null || true; rm -f "$1"
}
waitfor() { local t=$1; shift; for _ in $(seq $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep .25; done; return 1; }
# Daemons must not inherit the caller's file descriptors: a CI step that pipes this script's output (`| tee`, a log
# pipe) would otherwise never see EOF. Close every fd above 2, and point 0-2 at /dev/null and the launch log.
launch() {
  ( for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true; done
    exec "$@" </dev/null >>$L/launch.log 2>&1 )
}
# Write stdin to $1 (mode $2) only when it differs; return 0 when the file changed.
put() { local t; t=$(mktemp); cat >"$t"; if cmp -s "$t" "$1"; then rm -f "$t"; return 1; fi
  install -m "$2" "$t" "$1"; rm -f "$t"; }

# ---------------------------------------------------------------------------------------------------- packages
PKGS="munge slurmctld slurmd slurm-client"
[ "$ACCT" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
miss=$(for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$miss" ]; then
  [ "${LOCAL_SLURM_NO_INSTALL:-0}" = 1 ] && { log "missing packages:" $miss; exit 1; }
  command -v apt-get >/dev/null || { log "no apt-get: install $miss by hand"; exit 1; }
  log "installing" $miss
  # Keep the packages' init scripts from starting daemons (no systemd here; we start them ourselves). The
  # policy file is removed again unless it was there before.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d; own_policy=1; fi
  export DEBIAN_FRONTEND=noninteractive
  rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $miss >/dev/null; } </dev/null || rc=$?
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { log "apt-get failed ($rc)"; exit 1; }
fi

# ------------------------------------------------------------------------------------------------ configuration
install -d /etc/slurm $R $L $G /var/spool/slurmctld /var/spool/slurmd
install -d -o munge -g munge /run/munge
[ -s /etc/munge/munge.key ] || { log "creating munge key"; mungekey --create --force 2>/dev/null ||
  { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
# Fake GPUs: gres.conf File= must name character devices (a regular file is refused, and then jobs get no
# CUDA_VISIBLE_DEVICES). Major 1 minor 3 is /dev/null's.
for ((i = 0; i < NGPU; i++)); do [ -c $G/gpu$i ] || { rm -f $G/gpu$i; mknod -m 666 $G/gpu$i c 1 3; }; done

if [ "$ACCT" = 1 ]; then A="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else A="AccountingStorageType=accounting_storage/none"; fi
GRES_NODE=""; [ "$NGPU" -gt 0 ] && GRES_NODE="Gres=gpu:$NGPU"
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 3 / 4 ))
# One node `localhost`, or nodes n1..nN: several slurmd on this host, told apart by name (-N) and port; each sees
# the whole machine (same CPUs, memory and fake GPUs), which is enough to place and start multi-node job steps.
if [ "$NODES" = 1 ]; then
  NODE_NAMES=localhost
  NODE_LINES="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM $GRES_NODE State=UNKNOWN"
  PART_NODES=localhost SPOOL=/var/spool/slurmd PIDS=$R/slurmd.pid SLOG=$L/slurmd.log
else
  NODE_NAMES=$(seq -f 'n%g' 1 "$NODES" | tr '\n' ' ')
  NODE_LINES=$(for i in $(seq 1 "$NODES"); do echo "NodeName=n$i NodeHostname=localhost NodeAddr=127.0.0.1 \
Port=$((17000 + i)) CPUs=$(nproc) RealMemory=$MEM $GRES_NODE State=UNKNOWN"; done)
  PART_NODES="n[1-$NODES]" SPOOL=/var/spool/slurmd/%n PIDS=$R/slurmd-%n.pid SLOG=$L/slurmd-%n.log
fi
CHANGED=0
# DefMemPerCPU: without it a job with no --mem takes the whole node and jobs run one at a time.
# MinJobAge=300: finished jobs stay visible to squeue for 5 min (the plugin's squeue status mode needs that).
# AccountingStoreFlags=job_comment: sacct shows the plugin's comment, rule_<rule>_wildcards_<values>.
put /etc/slurm/slurm.conf 644 <<CONF && CHANGED=1 || true
# Written by workflow/tools/local-slurm/start.sh: a single-node test cluster. Edits are overwritten.
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
ReturnToService=2
SlurmctldPidFile=$R/slurmctld.pid
SlurmdPidFile=$PIDS
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=$SPOOL
SlurmctldLogFile=$L/slurmctld.log
SlurmdLogFile=$SLOG
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=300
KillWait=30
GresTypes=gpu
$A
$NODE_LINES
PartitionName=cpu Nodes=$PART_NODES Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$PART_NODES MaxTime=INFINITE State=UP
CONF
{ echo "AutoDetect=off"; [ "$NGPU" -gt 0 ] && echo "NodeName=$PART_NODES Name=gpu File=$G/gpu[0-$((NGPU - 1))]"; } |
  put /etc/slurm/gres.conf 644 && CHANGED=1 || true

# ------------------------------------------------------------------------------------------------------ daemons
alive /run/munge/munged.pid || { log "starting munged"; launch runuser -u munge -- /usr/sbin/munged; }
waitfor 10 sh -c 'munge -n | unmunge' || { log "munged does not answer"; exit 1; }

if [ "$ACCT" = 1 ]; then
  if ! alive /run/mysqld/mysqld.pid; then
    log "starting mariadb"; install -d -o mysql -g mysql /run/mysqld
    # mariadbd does not daemonize: setsid -f puts it in its own session, detached from this script.
    launch setsid -f /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      --innodb-buffer-pool-size=64M --log-error=/var/log/mariadb-local.log
  fi
  waitfor 60 mariadb-admin ping || { log "mariadb does not answer"; tail -n 20 /var/log/mariadb-local.log; exit 1; }
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS slurm@localhost IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO slurm@localhost;"
  printf '%s\n' AuthType=auth/munge DbdHost=localhost SlurmUser=root LogFile=$L/slurmdbd.log \
    PidFile=$R/slurmdbd.pid StorageType=accounting_storage/mysql StorageUser=slurm StoragePass=slurm |
    put /etc/slurm/slurmdbd.conf 600 && stop $R/slurmdbd.pid || true
  alive $R/slurmdbd.pid || { log "starting slurmdbd"; launch /usr/sbin/slurmdbd; }
  waitfor 60 sacctmgr -n list cluster || { log "slurmdbd does not answer"; tail -n 20 $L/slurmdbd.log; exit 1; }
  if ! sacctmgr -nP list cluster format=cluster | grep -qx localcluster; then
    sacctmgr -i add cluster localcluster >/dev/null; CHANGED=1
  fi
fi

pidfile() { [ "$1" = localhost ] && echo $R/slurmd.pid || echo "$R/slurmd-$1.pid"; }
if [ "$CHANGED" = 1 ]; then  # every slurmd of any earlier shape, then the controller
  for p in $R/slurmd.pid $R/slurmd-*.pid; do [ -e "$p" ] && stop "$p"; done; stop $R/slurmctld.pid
fi
alive $R/slurmctld.pid || { log "starting slurmctld"; launch /usr/sbin/slurmctld; }
waitfor 30 scontrol ping || { log "slurmctld does not answer"; tail -n 20 $L/launch.log $L/slurmctld.log; exit 1; }
for n in $NODE_NAMES; do
  [ "$n" = localhost ] || install -d "/var/spool/slurmd/$n"
  alive "$(pidfile "$n")" || { log "starting slurmd $n"; launch /usr/sbin/slurmd -N "$n"; }
done
ready() { for n in $NODE_NAMES; do
    case $(sinfo -h -n "$n" -o %T 2>/dev/null) in
      idle | mixed | allocated) ;;
      *drain* | down*) scontrol update NodeName="$n" State=RESUME 2>/dev/null || true; return 1 ;;
      *) return 1 ;;
    esac
  done; }
for _ in $(seq 120); do ready && { sinfo; exit 0; }; sleep .5; done
log "nodes not ready after 60 s"; sinfo -R || true; tail -n 20 $L/launch.log $L/slurmd*.log; exit 1
