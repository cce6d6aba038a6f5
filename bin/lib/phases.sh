# Phases for bin/test, sourced by it (and by tests/test_phases.py): `phase NAME COMMAND…` runs a check and waits for
# it; `alongside NAME COMMAND…` starts one in the background, beside those that follow, and `joined NAME` waits for
# it. The first failure, wherever it is, stops the run and what still runs. Phase times are printed at the end, pass
# or fail. Needs `set -euo pipefail` and `set +m`: without job control a job leads no process group, so `setsid`
# makes it one without forking, and its pid is its group's.
# shellcheck shell=bash

timings=() current='' hurry='' signalled=''
declare -A pid=() log=() began=()
logs=$(mktemp -d)
# A signal to bin/test ends it with the usual status; the EXIT trap then stops what runs.
trap 'signalled=SIGINT; exit 130' INT
trap 'signalled=SIGTERM; exit 143' TERM

phase() {
  local name=$1 started=${EPOCHREALTIME/./}
  shift
  printf '\n== %s\n' "$name"
  current=$name
  if declare -F "$1" > /dev/null; then
    "$@"  # one of this script's functions
  else
    spawn "$name" "$@"
    until_ended "$name"
  fi
  timings+=("$(printf '%-24s %6.1f s' "$name" "$(((${EPOCHREALTIME/./} - started) / 1000))e-3")")
  current=
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
joined() {
  local name=$1 status=0 during=$current  # the phase running meanwhile, if any
  wait "${pid[$name]}" || status=$?
  unset "pid[$name]"
  printf '\n== %s (ran in the background)\n' "$name"
  cat "${log[$name]}"
  current=$name
  if [ "$status" -ne 0 ]; then return "$status"; fi
  timings+=("$(printf '%-24s %6.1f s' "$name" "$((($(< "${log[$name]}.end") - began[$name]) / 1000))e-3")")
  current=$during
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
# Waits for job NAME, a signal to bin/test interrupting the wait (bash runs a trap only once a command in the
# foreground has ended), and returns its status. A background phase that ends meanwhile is joined then, so that
# its failure stops the run at once.
until_ended() {
  local name=$1 other status=0
  while running "$name"; do
    for other in "${!log[@]}"; do
      if [ -n "${pid[$other]:-}" ] && ! running "$other"; then joined "$other"; fi
    done
    sleep 0.2
  done
  wait "${pid[$name]}" || status=$?
  unset "pid[$name]"
  return "$status"
}
# Each job still running gets SIGINT, as Ctrl-C would give it, so that pytest tears down what its fixtures started;
# what is left of its group 30 s later, or at a second signal, is killed. A background phase's output is shown.
stop_running() {
  local name deadline=$((${EPOCHREALTIME/./} + 30000000))
  declare -A ended=()
  if [ ${#pid[@]} -eq 0 ]; then return 0; fi
  printf '\n== stopping %s (a second signal kills at once)\n' "${!pid[*]}"
  for name in "${!pid[@]}"; do
    if running "$name"; then kill -INT -- "-${pid[$name]}" 2>/dev/null || true; else ended[$name]=1; fi
  done
  for name in "${!pid[@]}"; do
    while [ -z "$hurry" ] && [ "${EPOCHREALTIME/./}" -lt "$deadline" ] && kill -0 -- "-${pid[$name]}" 2>/dev/null; do
      sleep 0.1 || true
    done
    kill -KILL -- "-${pid[$name]}" 2>/dev/null || true
    local status=0
    wait "${pid[$name]}" 2>/dev/null || status=$?
    if [ -n "${log[$name]:-}" ]; then
      if [ -n "${ended[$name]:-}" ]; then
        printf '\n== %s (ended with exit %s before it was joined)\n' "$name" "$status"
      else
        printf '\n== %s (stopped)\n' "$name"
      fi
      cat "${log[$name]}"
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
