#!/bin/sh
# Removes what scripts/install.sh installed: `sudo make uninstall`.
#
# The services are stopped and disabled, and the code, launchers, units, sysusers.d and
# tmpfiles.d files go. The configs in /etc/linerec and the state directories are kept:
# /var/lib/linerec holds recordings the agent has not stored yet and the device's signing
# key, /var/lib/linerec-agent holds the archive. PURGE=1 removes those too, and the users.
#
# DESTDIR and PREFIX must be what the installation used; the other paths are read from
# $PREFIX/share/linerec/installed. With DESTDIR set only the staged tree is touched.
set -eu

die() {
    echo "uninstall.sh: error: $*" >&2
    exit 1
}

say() {
    echo "uninstall.sh: $*"
}

DESTDIR=${DESTDIR-}
PREFIX=${PREFIX:-/opt/linerec}
PURGE=${PURGE:-0}
case $PREFIX in
    /*) ;;
    *) die "PREFIX '$PREFIX' must be an absolute path" ;;
esac
case $PREFIX in
    *[!A-Za-z0-9/._+-]* | / | /usr | /usr/local | /opt) die "PREFIX '$PREFIX' is not a directory linerec installs to" ;;
esac
case $PURGE in
    0 | 1) ;;
    *) die "PURGE '$PURGE' must be 0 or 1" ;;
esac
case $DESTDIR in
    '' | /*) ;;
    *) DESTDIR=$(pwd)/$DESTDIR ;;
esac
REAL=1
[ -z "$DESTDIR" ] || REAL=0
if [ "$REAL" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "uninstalling from this machine needs root: sudo make uninstall"
fi
root=$DESTDIR

# The paths install.sh used, from its record (the defaults if there is none).
setting() {
    value=
    if [ -f "$root$PREFIX/share/linerec/installed" ]; then
        value=$(sed -n "s/^$1=//p" "$root$PREFIX/share/linerec/installed" | tail -n 1)
    fi
    case $value in
        /*) case $value in *[!A-Za-z0-9/._+-]*) value= ;; esac ;;
        *) value= ;;
    esac
    echo "${value:-$2}"
}
SYSCONFDIR=$(setting SYSCONFDIR /etc/linerec)
BINDIR=$(setting BINDIR /usr/local/bin)
UNITDIR=$(setting UNITDIR /usr/local/lib/systemd/system)
SYSUSERSDIR=$(setting SYSUSERSDIR /usr/local/lib/sysusers.d)
TMPFILESDIR=$(setting TMPFILESDIR /usr/local/lib/tmpfiles.d)
UNITS="linerec.service linerec-agent.service linerec-agent-web.service linerec-agent-purge.timer linerec-agent-purge.service"
STATE_DIRS="/var/lib/linerec /var/lib/linerec-agent"

if [ "$REAL" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    for unit in $UNITS; do
        if [ -f "$UNITDIR/$unit" ]; then
            if [ -d /run/systemd/system ]; then
                systemctl disable --now --quiet "$unit" || true
            else
                systemctl disable --quiet "$unit" || true
            fi
        fi
    done
fi

for unit in $UNITS; do
    rm -f "$root$UNITDIR/$unit"
done
for name in linerec linerec-agent; do
    rm -f "$root$SYSUSERSDIR/$name.conf" "$root$TMPFILESDIR/$name.conf"
    # Only the launcher links install.sh made; a file of someone else's stays.
    if [ -L "$root$BINDIR/$name" ] && [ "$(readlink "$root$BINDIR/$name")" = "$PREFIX/bin/$name" ]; then
        rm -f "$root$BINDIR/$name"
    fi
done
rm -rf "$root$PREFIX"
if [ "$REAL" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
say "removed linerec from $DESTDIR$PREFIX and its units"

if [ "$PURGE" = 1 ]; then
    rm -rf "$root$SYSCONFDIR"
    for dir in $STATE_DIRS; do
        rm -rf "$root$dir"
    done
    if [ "$REAL" = 1 ]; then
        for user in linerec linerec-agent; do
            if getent passwd "$user" >/dev/null 2>&1; then
                userdel "$user" || say "could not remove the user $user"
            fi
            if getent group "$user" >/dev/null 2>&1; then
                groupdel "$user" 2>/dev/null || true
            fi
        done
        say "PURGE=1: removed the users linerec and linerec-agent"
    fi
    say "PURGE=1: removed $SYSCONFDIR and $STATE_DIRS (recordings, keys, archive)"
else
    kept=
    for dir in "$SYSCONFDIR" $STATE_DIRS; do
        [ ! -e "$root$dir" ] || kept="$kept $dir"
    done
    [ -z "$kept" ] || say "kept$kept (configs, keys and recordings); PURGE=1 removes them"
fi
