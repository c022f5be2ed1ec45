#!/bin/sh
# The image's entry point: the first argument chooses the service or the CLI.
#   realtybot-entrypoint ingress|router|dedup|brain|outbound
#   realtybot-entrypoint realtybot <command> [options]
set -eu

usage() {
    echo "usage: realtybot-entrypoint ingress|router|dedup|brain|outbound" >&2
    echo "       realtybot-entrypoint realtybot <command> [options]" >&2
}

if [ "$#" -eq 0 ]; then
    usage
    exit 64
fi

what="$1"
shift
case "$what" in
    ingress | router | dedup | brain | outbound)
        # exec: the service is PID 1 and receives SIGTERM itself (graceful shutdown).
        exec python -m "services.$what" "$@"
        ;;
    realtybot)
        exec realtybot "$@"
        ;;
    -h | --help | help)
        usage
        exit 0
        ;;
    *)
        echo "realtybot-entrypoint: unknown service '$what'" >&2
        usage
        exit 64
        ;;
esac
