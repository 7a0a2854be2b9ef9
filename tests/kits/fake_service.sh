#!/bin/sh
# Stand-in for the keycam device service in tests: `restart` starts a background process bound to the
# slot `current` points at; `status` succeeds only while that process lives and runs the current slot.
# A file `fail_start` in the device root makes the next restart produce a service that never comes up.
cd "$KEYCAM_ROOT" || exit 2
case "$1" in
restart)
    if [ -f service.pid ]; then kill "$(cat service.pid)" 2>/dev/null; rm -f service.pid; fi
    readlink slots/current > service.slot 2>/dev/null || rm -f service.slot
    [ -f fail_start ] && exit 0
    nohup sleep 300 >/dev/null 2>&1 &
    echo $! > service.pid
    ;;
status)
    [ -f service.pid ] && kill -0 "$(cat service.pid)" 2>/dev/null \
        && [ "$(cat service.slot)" = "$(readlink slots/current)" ]
    ;;
stop)
    if [ -f service.pid ]; then kill "$(cat service.pid)" 2>/dev/null; rm -f service.pid; fi
    ;;
*)
    echo "usage: $0 restart|status|stop" >&2; exit 2
    ;;
esac
