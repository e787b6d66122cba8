#!/bin/bash
# What removals sent ahead save (doc/measurements.md): a Noise line a-b of
# mesh up processes, b serving a directory, a mounting the tree; tar x of
# 2,000 small files in 100 directories through a's mount, then rm -rf of
# them, timed, with two builds alternating three times. Run as root from
# the repository root: bench/remove-ab.sh OLD_MESH NEW_MESH (for example
# a build of the commit before, copied aside, and target/release/mesh).
set -e
OLD=$(realpath "$1") NEW=$(realpath "$2")
D=${TMPDIR:-/tmp}/remove-ab
rm -rf "$D"; mkdir -p "$D/b" "$D/src" "$D/mnt"
cat > "$D/d.toml" <<T
[machines.a]
listen = ["tcp!127.0.0.1!17811"]
dial = ["tcp!127.0.0.2!17812"]
mount = "$D/mnt"
[machines.b]
listen = ["tcp!127.0.0.2!17812"]
services = [{ name = "files", kind = "dir", root = "$D/b", squash = "none" }]
T
for d in $(seq 100); do mkdir "$D/src/d$d"; for f in $(seq 20); do echo "file $d $f" > "$D/src/d$d/f$f"; done; done
tar cf "$D/t.tar" -C "$D/src" .
export XDG_RUNTIME_DIR=$D XDG_STATE_HOME=$D/state RUST_LOG=warn
stop() { kill -INT $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
for r in 1 2 3; do for v in old new; do
  bin=$OLD; [ $v = new ] && bin=$NEW
  for m in b a; do "$bin" up "$D/d.toml" -m $m > "$D/$m.log" 2>&1 & sleep 0.7; done
  root=$D/mnt/n/b/svc/files/root
  for i in $(seq 100); do [ -d "$root" ] && break; sleep 0.1; done
  mkdir "$root/x"
  s=$(date +%s.%N); tar xf "$D/t.tar" -C "$root/x"; e=$(date +%s.%N)
  rm -rf "$root/x"; e2=$(date +%s.%N)
  echo "$v tar x $(echo "$e - $s" | bc) s, rm -rf $(echo "$e2 - $e" | bc) s"
  stop
done; done
