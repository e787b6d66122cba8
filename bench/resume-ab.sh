#!/bin/bash
# What sessions cost bulk (doc/measurements.md): a Noise line a-b-c of
# mesh up processes, 2 GiB by mesh send to c's sink, resume on (the
# default) and off, interleaved, three runs each. Run from the repository
# root after cargo build --release -p mesh.
MESH=${MESH:-target/release/mesh}
mk() { # $1 dir $2 extra key
  mkdir -p $1
  cat > $1/d.toml <<T
[machines.a]
listen = ["tcp!127.0.0.1!17701"]
dial = ["tcp!127.0.0.2!17702"]
$2
services = [{ name = "echo", kind = "echo" }]
[machines.b]
listen = ["tcp!127.0.0.2!17702"]
dial = ["tcp!127.0.0.3!17703"]
$2
[machines.c]
listen = ["tcp!127.0.0.3!17703"]
$2
services = [{ name = "sink", kind = "sink" }]
T
}
one() { # $1 dir
  export XDG_RUNTIME_DIR=$1 XDG_STATE_HOME=$1/state RUST_LOG=warn
  for m in a b c; do $MESH up $1/d.toml -m $m > $1/$m.log 2>&1 & sleep 0.5; done
  for i in $(seq 50); do $MESH routes -m a 2>/dev/null | grep -q "^sink" && break; sleep 0.2; done
  s=$(date +%s.%N); head -c 2147483648 /dev/zero | $MESH send -m a /n/c/svc/sink >/dev/null; e=$(date +%s.%N)
  echo "$1 $(echo "2147.483648 / ($e - $s)" | bc -l | cut -c1-6) MB/s"
  kill $(jobs -p) 2>/dev/null; wait 2>/dev/null
}
D=${TMPDIR:-/tmp}/resume-ab
mk $D/on ""
mk $D/off 'resume = "0s"'
for r in 1 2 3; do one $D/on; one $D/off; done
