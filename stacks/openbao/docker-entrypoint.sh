#!/bin/sh
# Entrypoint with the official Vault image's contract, for OpenBao:
#   server [args]  -> bao server -config=/vault/config [args], as the vault user
#   <bao command>  -> bao <command> [args] (version, status, operator, ...)
#   anything else  -> exec'd as given
set -e

if [ "$1" = "server" ]; then
    shift
    set -- bao server -config=/vault/config "$@"
elif [ -n "$1" ] && [ "${1#-}" = "$1" ] && bao --help "$1" 2>&1 | grep -q "^Usage: bao $1"; then
    set -- bao "$@"
fi

if [ "$1" = "bao" ] && [ "$2" = "server" ] && [ "$(id -u)" = "0" ]; then
    # Raft data and logs must belong to the server's user; a fresh volume arrives root-owned.
    # The config and certificates are mounted read-only by Swarm and only need to be readable.
    for dir in /vault/file /vault/logs; do
        if [ "$(stat -c %u "$dir")" != "$(id -u vault)" ]; then
            chown -R vault:vault "$dir"
        fi
    done
    # exec: bao becomes PID 1 and gets Swarm's SIGTERM and the reloader's SIGHUP directly.
    exec setpriv --reuid=vault --regid=vault --init-groups "$@"
fi

exec "$@"
