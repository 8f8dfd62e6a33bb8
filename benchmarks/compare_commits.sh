#!/bin/bash
# Back-to-back timings of two commits: speed_targets.py's cases, alternating.
#
#   benchmarks/compare_commits.sh OLD NEW ROUNDS CASE...
#   e.g. benchmarks/compare_commits.sh 55fe90b HEAD 4 exact_3_attributes exact_box
#
# Each commit is checked out in a temporary git worktree; each round runs
# speed_targets.py once for OLD, then once for NEW, in fresh processes, so that the
# hour's drift on a shared machine falls on both. Prints "commit case ms ratio" lines.
set -euo pipefail
old=$1; new=$2; rounds=$3; shift 3
python=${PYTHON:-python}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" 2>/dev/null; git -C "$root" worktree remove --force "$work/new" 2>/dev/null; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/old" "$old"
git -C "$root" worktree add -q --detach "$work/new" "$new"
for _ in $(seq "$rounds"); do
  for side in old new; do
    name=$([ $side = old ] && echo "$old" || echo "$new")
    (cd "$work/$side" && PYTHONPATH=. "$python" benchmarks/speed_targets.py --cases "$@" 2>/dev/null) \
      | awk -v c="$name" '$2 ~ /^[0-9]+$/ {print c, $1, $6, $8}'
  done
done
