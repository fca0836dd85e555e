#!/usr/bin/env bash
# Keep what travels to the device machine under its 64 MiB limit (the working tree: tracked files,
# untracked files git does not ignore, and the carried paths). Both shipped models are tracked
# (assets/default 50 MB, assets/lite 14 MB), which alone is over the limit, and a training call also
# carries the speech corpus (11 MB). A call that needs only one model runs from a slim tree (docs/ can
# go too: the machine does not read it):
#
#   bash scripts/device_tree.sh size [CARRY ...]      # bytes that would travel with these carried paths
#   bash scripts/device_tree.sh slim [PATH ...]       # default PATH: assets/lite; e.g. slim assets/lite docs
#   ... the device calls ...
#   bash scripts/device_tree.sh restore               # back to the branch, every file as it was
#
# `slim` needs a clean tree on a branch. It switches to a detached commit made from HEAD without the
# given paths (their files leave the working tree; nothing on the branch changes), and remembers the
# branch in .git/knotanim-device-tree. `restore` switches back. Never stop a session while slim.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
LIMIT=${DEVICE_TREE_LIMIT:-$((64 * 1024 * 1024))}  # bytes; the variable is for the tests
STATE="$(git rev-parse --git-dir)/knotanim-device-tree"

travelling_bytes() {
  { git ls-files -z --cached --others --exclude-standard
    for c in "$@"; do [ -e "$c" ] && find "$c" -type f -print0; done
  } | { xargs -0 -r stat -c %s -- 2> /dev/null || true; } | awk '{s += $1} END {print s + 0}'  # a deleted tracked file counts 0
}

report() {
  local bytes
  bytes=$(travelling_bytes "$@")
  awk -v b="$bytes" -v l="$LIMIT" 'BEGIN {printf "travels: %.1f MiB of %.0f MiB%s\n", b / 1048576, l / 1048576, (b > l) ? " - OVER THE LIMIT" : ""}'
  [ "$bytes" -le "$LIMIT" ]
}

case "${1:-}" in
  size)
    shift
    report "$@"
    ;;
  slim)
    shift
    [ -f "$STATE" ] && { echo "device_tree: already slim; run 'restore' first" >&2; exit 2; }
    git diff --quiet && git diff --cached --quiet || { echo "device_tree: commit or stash your changes first" >&2; exit 2; }
    branch=$(git symbolic-ref -q --short HEAD) || { echo "device_tree: not on a branch" >&2; exit 2; }
    [ $# -gt 0 ] || set -- assets/lite
    git switch -q --detach
    git rm -rq -- "$@"
    git -c user.name=knotanim-device -c user.email=device@localhost commit -qm "device tree: without $*"
    echo "$branch" > "$STATE"
    echo "slim: without $* (detached from $branch; 'restore' to return)"
    report || true
    ;;
  restore)
    [ -f "$STATE" ] || { echo "device_tree: not slim" >&2; exit 2; }
    git switch -q "$(cat "$STATE")"
    rm -f "$STATE"
    echo "restored: on $(git symbolic-ref --short HEAD)"
    report || true
    ;;
  *)
    echo "usage: device_tree.sh size [CARRY ...] | slim [PATH ...] | restore" >&2
    exit 2
    ;;
esac
