#!/usr/bin/env bash
# Stop the daemons started by start.sh, each by its PID file, in reverse start order. Idempotent; configuration,
# packages, the accounting database and job state stay (start.sh brings the same cluster back).
#   sudo bash workflow/tools/local-slurm/stop.sh
set -u
stop_pidfile() {
  [ -s "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
  echo "[local-slurm] stopping $2 (pid $pid)" >&2
  kill "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }; sleep .2; done
  echo "[local-slurm] $2 did not stop in 20 s: SIGKILL" >&2
  kill -9 "$pid" 2>/dev/null; rm -f "$1"
}
stop_pidfile /run/slurm/slurmd.pid slurmd
for p in /run/slurm/slurmd-*.pid; do [ -e "$p" ] && stop_pidfile "$p" "slurmd $(basename "$p" .pid | cut -d- -f2)"; done
stop_pidfile /run/slurm/slurmctld.pid slurmctld
stop_pidfile /run/slurm/slurmdbd.pid slurmdbd
stop_pidfile /run/mysqld/mysqld.pid mariadbd
stop_pidfile /run/munge/munged.pid munged
exit 0
