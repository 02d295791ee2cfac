#!/usr/bin/env bash
# Proves that the README's two set-up commands (`bash scripts/main.sh`, `bash scripts/test.sh`)
# work on a bare Debian 12 machine: builds a minbase bookworm root with debootstrap, copies this
# checkout in (what git knows about, no build folders), and runs both commands inside it with a
# clean environment, so every package they need must come from scripts/packages.txt.
#
# Needs root, ~3 GB in DIR and access to the Debian mirror. Takes about 10-15 minutes on 2 cores
# (measured: debootstrap 1 min, main.sh 4-5 with the 332 MB of packages python3-torch and friends
# need, test.sh 5: the ASan build and the test suites), plus 1-2 min to remove an old root;
# --skip-tests stops after main.sh. docs/fresh-machine.md has a run's summary.
#
# Usage: scripts/fresh-machine-check.sh [--dir DIR] [--log FILE] [--reuse] [--skip-tests] [--no-nice]
#   --dir DIR     the root to build (default $CONVKIT_BARE_DIR or /var/tmp/convkit-bare); a
#                 positional DIR works too
#   --log FILE    full output of every step (default DIR.log)
#   --reuse       keep an existing completed root instead of a fresh debootstrap (faster, but it
#                 is no longer bare once a previous run installed packages in it)
#   --skip-tests  run only main.sh
#   --no-nice     keep normal CPU priority (the default runs at nice 19 so that other work on
#                 the machine is disturbed less)
# Exit status: 0 when every step succeeded, 1 when one failed, 2 on a usage error.
set -euo pipefail

SRC=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
DIR=${CONVKIT_BARE_DIR:-/var/tmp/convkit-bare}
LOG=""
REUSE=0
SKIP_TESTS=0
NICE=1
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A debootstrap that was interrupted leaves a root that looks complete; only this marker, written
# after it succeeded, lets --reuse trust one.
MARKER=.convkit-bare-complete

MOUNTED=()       # mount points in the root, in mount order (unmounted in reverse)
STEP_NAMES=()
STEP_TIMES=()
STEP_RCS=()
FAIL_TAIL=""     # the last lines of the step that failed, for the summary
COPIED=""        # the commit the copy was taken from, and how the work tree differed from it

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

die() { echo "fresh-machine-check: $*" >&2; exit 1; }

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR=${2:?--dir needs a value}; shift ;;
      --log) LOG=${2:?--log needs a value}; shift ;;
      --reuse) REUSE=1 ;;
      --skip-tests) SKIP_TESTS=1 ;;
      --no-nice) NICE=0 ;;
      -h|--help) usage; exit 0 ;;
      -*) usage >&2; exit 2 ;;
      *) DIR=$1 ;;
    esac
    shift
  done
  DIR=$(realpath -m "$DIR")
  # rm -rf runs on DIR: refuse anything that could be a system directory.
  case "$DIR" in
    /|/bin|/boot|/dev|/etc|/home|/lib*|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/usr/*|/var|/var/tmp|"$SRC")
      die "refusing to use $DIR as the root" ;;
  esac
  LOG=$(realpath -m "${LOG:-$DIR.log}")
  case "$LOG" in "$DIR"/*) die "the log must live outside the root (it is removed)" ;; esac
}

# --- host facts -------------------------------------------------------------------------------

# The first URI of the first deb822 `deb` stanza whose Suites match $1 (an awk regex).
deb822_uri() {
  local file=/etc/apt/sources.list.d/debian.sources
  [ -r "$file" ] || return 0
  awk -v want="$1" '
    function flush() {
      if (!found && uri != "" && types ~ /(^| )deb( |$)/ && suites ~ want) { print uri; found = 1 }
      uri = ""; suites = ""; types = ""
    }
    /^[[:space:]]*$/ { flush(); next }
    /^URIs:/   { uri = $2 }
    /^Suites:/ { suites = $0 }
    /^Types:/  { sub(/^Types:[[:space:]]*/, ""); types = $0 }
    END { flush() }' "$file"
}

# The URI of the first one-line `deb` entry in sources.list whose suite matches $1.
sources_list_uri() {
  [ -r /etc/apt/sources.list ] || return 0
  awk -v want="$1" '$1 == "deb" { sub(/\[[^]]*\][[:space:]]*/, "")
                                  if ($3 ~ want) { print $2; exit } }' /etc/apt/sources.list
}

find_mirrors() {
  MIRROR=$(deb822_uri "")
  [ -n "$MIRROR" ] || MIRROR=$(sources_list_uri '^(bookworm|stable)$')
  [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
  SECURITY=$(deb822_uri '-security')
  [ -n "$SECURITY" ] || SECURITY=$(sources_list_uri '-security')
  [ -n "$SECURITY" ] || SECURITY=http://deb.debian.org/debian-security
}

cpu_model() { lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1; }

# --- mounts -----------------------------------------------------------------------------------

# Mount points at or below DIR, deepest first (from the kernel, not from our own bookkeeping,
# so that leftovers of an earlier killed run are found too).
mounts_under() {
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

unmount_all() {
  local m i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    m=${MOUNTED[i]}
    umount "$m" 2>/dev/null || umount -R "$m" 2>/dev/null || umount -l "$m" || true
  done
  MOUNTED=()
  # Whatever is still there (a --rbind child, or a previous run's) goes lazily.
  for m in $(mounts_under "$DIR"); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}

mount_in() {   # mount_in TARGET MOUNT-ARGS...
  local target=$DIR$1; shift
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTED+=("$target")
  # On a host whose mounts are shared (systemd's default) a mount under the /dev bind would
  # otherwise propagate to the host's /dev, and its unmount too.
  mount --make-private "$target"
}

mount_pseudo_fs() {
  mount_in /proc -t proc proc
  mount_in /sys -t sysfs sysfs
  mount_in /dev --bind /dev
  mount_in /dev/pts --bind /dev/pts
  # The host's /dev/shm is a mount of its own, which the /dev bind does not carry; PyTorch's
  # shared memory would land in the host's devtmpfs instead.
  mount_in /dev/shm -t tmpfs -o mode=1777,nosuid,nodev shm
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  unmount_all
  exit "$rc"
}

# --- steps ------------------------------------------------------------------------------------

log() { echo "$*" | tee -a "$LOG"; }

# run_step NAME FUNCTION: runs FUNCTION with its output on the terminal and in the log, records
# its wall time and exit status; returns that status. FUNCTION runs in a new bash (given this
# script's functions and settings), because `run_step ... || ok=0` would switch set -e off in it.
run_step() {
  local name=$1 fn=$2 start rc first_line
  log ""
  log "=== $name: $fn ($(date -u '+%F %T UTC'))"
  start=$(date +%s)
  first_line=$(($(wc -l <"$LOG") + 1))
  set +e
  bash -c "set -euo pipefail; $(declare -p DIR SRC MIRROR MARKER CHROOT_PATH); $(declare -f); $fn" \
    2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || FAIL_TAIL=$(tail -n "+$first_line" "$LOG" | tail -n 20)
  STEP_NAMES+=("$name")
  STEP_TIMES+=($(( $(date +%s) - start )))
  STEP_RCS+=("$rc")
  log "=== $name: exit $rc after $(fmt_time "${STEP_TIMES[-1]}")"
  return "$rc"
}

fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

remove_old_root() {
  [ -e "$DIR" ] || return 0
  unmount_all
  [ -z "$(mounts_under "$DIR")" ] || die "something is still mounted under $DIR; not removing it"
  rm -rf --one-file-system "$DIR"
}

make_root() {
  debootstrap --variant=minbase bookworm "$DIR" "$MIRROR"
  touch "$DIR/$MARKER"
}

configure_root() {
  cat >"$DIR/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
EOF
  cp -L /etc/resolv.conf "$DIR/etc/resolv.conf"
  # No init runs in a chroot: stop package scripts from starting services that would outlive the
  # run and keep the mounts busy (what Debian's own container images do).
  printf '#!/bin/sh\nexit 101\n' >"$DIR/usr/sbin/policy-rc.d"
  chmod 755 "$DIR/usr/sbin/policy-rc.d"
}

# What a fresh clone would hold: tracked files plus untracked ones that are not ignored, never a
# build folder. Files deleted in the work tree but still tracked are skipped, not an error.
copy_checkout() {
  local dest=$DIR/root/convkit
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$SRC" &&
   git ls-files -co --exclude-standard -z |
     while IFS= read -r -d '' f; do
       case "$f" in build/*|build-*/*) continue ;; esac
       if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
     done |
     tar --null -T - -c) | tar -x -C "$dest"
  echo "copied $(find "$dest" -type f | wc -l) files ($(du -sh "$dest" | cut -f1)) to $dest"
}

# The README's commands, run in the checkout inside the root with a clean environment.
in_root() {
  chroot "$DIR" /usr/bin/env -i HOME=/root PATH="$CHROOT_PATH" \
    bash -c "cd /root/convkit && $1"
}
run_main() { in_root 'bash scripts/main.sh'; }
run_tests() { in_root 'bash scripts/test.sh'; }

# --- summary ----------------------------------------------------------------------------------

summary() {
  local i failed=0
  echo ""
  echo "=== fresh-machine-check summary ($(date -u '+%F %T UTC'))"
  echo "root:   $DIR (debootstrap --variant=minbase bookworm $MIRROR)"
  echo "log:    $LOG"
  echo "CPU:    $(cpu_model), $(nproc) cores"
  echo "copied: ${COPIED:-(no copy)}"
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-12s %8s  exit %s\n' "${STEP_NAMES[i]}" "$(fmt_time "${STEP_TIMES[i]}")" "${STEP_RCS[i]}"
    [ "${STEP_RCS[i]}" -eq 0 ] || failed=1
  done
  echo "key lines:"
  # The bench's verdict, ctest's totals, the names of failed tests and apt's and CMake's errors,
  # each tagged with the step whose output it is in.
  awk '/^=== [^ ]+: / { step = $2; sub(/:$/, "", step); next }
       /^correctness: |^# engine |^== |tests passed, [0-9]+ tests? failed out of|^The following tests FAILED|^[[:space:]]+[0-9]+ - .*\((Failed|Timeout|Subprocess|SEGFAULT|Not Run|Exception|ILLEGAL|BAD_COMMAND)|^E: |Unable to locate package|CMake Error|^ninja: build stopped/ {
         printf "  %-9s %s\n", step ":", $0; n++ }
       END { if (!n) print "  (none found)" }' "$LOG"
  if [ -n "$FAIL_TAIL" ]; then
    echo "last lines of the failed step:"
    printf '%s\n' "$FAIL_TAIL" | sed 's/^/  | /'
  fi
  return "$failed"
}

main() {
  parse_args "$@"
  [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount, chroot)"
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  # Every step inherits this; the machine may be shared with someone's builds.
  if [ "$NICE" -eq 1 ]; then renice -n 19 -p $$ >/dev/null; ionice -c 3 -p $$ 2>/dev/null || true; fi
  find_mirrors
  trap on_exit EXIT
  # Ctrl-C (which the running step gets too) and TERM end through EXIT, so the mounts never
  # outlive the script; bash acts on a TERM sent to the script alone once the step ends.
  trap 'exit 130' INT
  trap 'exit 143' TERM

  mkdir -p "$(dirname "$LOG")"
  : >"$LOG"
  log "fresh-machine-check: $SRC -> $DIR, mirror $MIRROR, security $SECURITY, log $LOG"

  local ok=1
  if [ "$REUSE" -eq 1 ] && [ -e "$DIR/$MARKER" ]; then
    unmount_all
    log "reusing the completed root in $DIR (not bare if an earlier run installed packages)"
  else
    [ ! -e "$DIR" ] || log "removing the old root in $DIR"
    remove_old_root
    run_step debootstrap make_root || ok=0
  fi
  if [ "$ok" -eq 1 ]; then
    configure_root
    # Recorded now: the work tree may move on (someone else committing) while the steps run.
    COPIED="$(git -C "$SRC" rev-parse --short HEAD), $(date -u '+%F %T UTC'), with $(git -C "$SRC" status --porcelain | wc -l) modified/untracked paths"
    run_step copy copy_checkout || ok=0
  fi
  if [ "$ok" -eq 1 ]; then
    mount_pseudo_fs
    run_step main.sh run_main || ok=0
  fi
  if [ "$ok" -eq 1 ] && [ "$SKIP_TESTS" -eq 0 ]; then
    run_step test.sh run_tests || ok=0
  fi
  unmount_all
  # Computed before it is appended: grep-ing the log while tee writes to it could read itself.
  local text
  text=$(summary) || ok=0
  printf '%s\n' "$text" | tee -a "$LOG"
  [ "$ok" -eq 1 ]
}

main "$@"
