# Phases for bin/test, sourced by it (and by tests/test_phases.py): `phase NAME COMMAND…` runs a check and waits for
# it; `alongside NAME COMMAND…` starts one in the background, beside those that follow, and `joined NAME` waits for
# it. The first failure, wherever it is, stops the run and what still runs. Phase times are printed at the end, pass
# or fail (a failed or stopped phase has none). Needs `set -euo pipefail` and `set +m`: without job control a job
# leads no process group, so `setsid` makes it one without forking, and its pid is its group's.
# shellcheck shell=bash

timings=() current='' hurry='' signalled=''
declare -A pid=() log=() began=()
logs=$(mktemp -d)
# A signal to bin/test ends it with the usual status; the EXIT trap then stops what runs, and a second signal, even
# one that comes before the trap has begun, only hurries that.
trap 'signalled=SIGINT; trap "hurry=1" INT TERM; exit 130' INT
trap 'signalled=SIGTERM; trap "hurry=1" INT TERM; exit 143' TERM

phase() {
  local name=$1 started=${EPOCHREALTIME/./}
  shift
  printf '\n== %s\n' "$name"
  current=$name
  if declare -F "$1" > /dev/null; then
    "$@"  # one of this script's functions, in the foreground
    join_ended
  else
    spawn "$name" "$@"
    settle "$name"
  fi
  timed "$name" "$started" "${EPOCHREALTIME/./}"
  current=''
}
# `timed NAME START END` records a phase's time (microseconds since the epoch, as EPOCHREALTIME without its dot).
timed() {
  timings+=("$(printf '%-24s %6.1f s' "$1" "$((($3 - $2) / 1000))e-3")")
}
# `shown NAME HOW` prints a background phase's output under a heading saying how it went.
shown() {
  printf '\n== %s (%s)\n' "$1" "$2"
  cat "${log[$1]}"
}
alongside() {
  local name=$1
  shift
  printf '\n== %s: started in the background; its output comes when it ends\n' "$name"
  log[$name]="$logs/${#log[@]}" began[$name]=${EPOCHREALTIME/./}
  # The wrapper stamps the time the command ended.
  # shellcheck disable=SC2016 # expanded by the inner bash
  spawn "$name" bash -c '"$@"; status=$?; echo "${EPOCHREALTIME/./}" > "$0"; exit $status' "${log[$name]}.end" "$@" \
    > "${log[$name]}" 2>&1
}
# `joined NAME` waits for a background phase, unless it was joined already, as it ended.
joined() {
  if [ -n "${pid[$1]:-}" ]; then settle "$1"; fi
}
# `spawn NAME COMMAND…` starts COMMAND as a job in a session of its own, whose group a signal can stop whole, with
# SIGINT's and SIGQUIT's default actions back: a script's job starts with both ignored, and so would everything it
# runs, the tests and the processes they signal.
spawn() {
  local name=$1
  shift
  setsid env --default-signal=INT,QUIT "$@" &
  pid[$name]=$!
}
# Whether job NAME still runs, by bash's job table: unlike its pid, that is never another process's.
running() {
  local live
  jobs -rp > "$logs/running"
  mapfile -t live < "$logs/running"
  [[ " ${live[*]} " == *" ${pid[$1]} "* ]]
}
# `settle NAME` waits until job NAME has ended, then finishes it. Meanwhile it joins each background phase that
# ends, so that a failure anywhere stops the run then, not when the phases before it in this script are done.
settle() {
  local name=$1 during=$current
  current=$name
  while running "$name"; do
    join_ended "$name"
    sleep 0.2
  done
  finish "$name"
  current=$during
}
# Joins every background phase that has ended (but $1).
join_ended() {
  local name
  for name in "${!log[@]}"; do
    if [ "$name" != "${1:-}" ] && [ -n "${pid[$name]:-}" ] && ! running "$name"; then finish "$name"; fi
  done
}
# `finish NAME` takes an ended job's status; a background phase's output and time are shown. A failure stops the
# run, naming the phase.
finish() {
  local name=$1 status=0 during=$current
  current=$name
  wait "${pid[$name]}" || status=$?
  unset "pid[$name]"
  if [ -n "${log[$name]:-}" ]; then
    shown "$name" "ran in the background"
  fi
  if [ "$status" -ne 0 ]; then return "$status"; fi
  if [ -n "${log[$name]:-}" ]; then
    timed "$name" "${began[$name]}" "$(< "${log[$name]}.end")"
  fi
  current=$during
}
# Each job still running gets SIGINT, as Ctrl-C would give it, so that pytest tears down what its fixtures started;
# what is left of its group 30 s later, or at a second signal, is killed. A background phase's output is shown.
stop_running() {
  local name status deadline=$((${EPOCHREALTIME/./} + 30000000))
  local -A ended=()
  if [ ${#pid[@]} -eq 0 ]; then return 0; fi
  printf '\n== stopping what still runs (a second signal kills it at once):'
  printf ' [%s]' "${!pid[@]}"
  printf '\n'
  for name in "${!pid[@]}"; do
    # One that ended unjoined is only reaped: its number may be another's by now. (What a job leaves running in its
    # own group after it ended is not looked for; what pytest's fixtures start, they stop.)
    if running "$name"; then kill -INT -- "-${pid[$name]}" 2>/dev/null || true; else ended[$name]=1; fi
  done
  for name in "${!pid[@]}"; do
    if [ -z "${ended[$name]:-}" ]; then
      while [ -z "$hurry" ] && [ "${EPOCHREALTIME/./}" -lt "$deadline" ] && kill -0 -- "-${pid[$name]}" 2>/dev/null; do
        sleep 0.1 || true
      done
      kill -KILL -- "-${pid[$name]}" 2>/dev/null || true
      # Killed, its processes still take a moment to go (or stay as zombies, if nothing reaps them).
      for _ in {1..20}; do
        kill -0 -- "-${pid[$name]}" 2>/dev/null || break
        sleep 0.1 || true
      done
    fi
    status=0
    wait "${pid[$name]}" 2>/dev/null || status=$?
    if [ -n "${log[$name]:-}" ]; then
      if [ -n "${ended[$name]:-}" ]; then
        shown "$name" "ended with exit $status before it was joined"
      else
        shown "$name" stopped
      fi
    fi
  done
}
summary() {
  local status=$?
  trap 'hurry=1' INT TERM
  stop_running
  printf '\n== phase times\n'
  if [ ${#timings[@]} -gt 0 ]; then printf '%s\n' "${timings[@]}"; fi
  if [ -n "$signalled" ]; then
    printf '%-24s stopped by %s\n' "${current:-bin/test}" "$signalled"
  elif [ -n "$current" ]; then
    printf '%-24s FAILED (exit %s)\n' "$current" "$status"
  elif [ "$status" -ne 0 ]; then
    printf 'stopped (exit %s)\n' "$status"
  fi
  rm -rf "$logs"
}
trap summary EXIT
