#!/bin/sh
# Two network namespaces, each joined to this host by a veth pair, so that two servers on
# one machine talk to their clients and to Redis over a network stack of their own:
#
#   kanal-a: 10.77.1.2/24  <-veth->  host 10.77.1.1/24
#   kanal-b: 10.77.2.2/24  <-veth->  host 10.77.2.1/24
#
# Usage (as root): bench/netns.sh up | down. `down` removes whatever `up` made, and is safe
# to run when nothing is there. bench/moonshot.py calls both.
set -eu

NAMESPACES="a:1 b:2"

up() {
    for entry in $NAMESPACES; do
        name="kanal-${entry%%:*}"
        net="${entry##*:}"
        ip netns add "$name"
        ip link add "veth-$name" type veth peer name eth0 netns "$name"
        ip addr add "10.77.$net.1/24" dev "veth-$name"
        ip link set "veth-$name" up
        ip netns exec "$name" ip addr add "10.77.$net.2/24" dev eth0
        ip netns exec "$name" ip link set eth0 up
        ip netns exec "$name" ip link set lo up
    done
}

down() {
    for entry in $NAMESPACES; do
        name="kanal-${entry%%:*}"
        # Deleting the namespace deletes its end of the pair, and so the pair.
        ip netns del "$name" 2>/dev/null || true
        ip link del "veth-$name" 2>/dev/null || true
    done
}

case "${1:-}" in
    up) down; up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
