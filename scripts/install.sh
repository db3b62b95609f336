#!/bin/sh
# Installs linerec as an appliance: `sudo make install` on the Raspberry Pi (or on the host,
# with PARTS=agent). Run again to upgrade: code and units are replaced, configs and
# recordings are kept, and running services are restarted.
#
# What it does, for each part in PARTS ("device", "agent" or both):
#   * installs the packages the Python parts need (apt-get; APT=0 skips it);
#   * creates the system users with systemd-sysusers (linerec, linerec-agent);
#   * builds a virtual environment in $PREFIX/venv with linerec and the part's extra
#     (pip; BUILD_VENV=0 skips it) and puts launchers in $PREFIX/bin and $BINDIR;
#   * puts the example configs in $SYSCONFDIR (never over an existing one; mode 0640,
#     group of the part's user), the units in $UNITDIR and the sysusers.d and tmpfiles.d
#     files next to them;
#   * reloads systemd and enables the services (START=1 also starts them now).
#
# Units go in /usr/local/lib/systemd/system, where systemd looks for units "installed by the
# administrator" (systemd.unit(5)); /etc/systemd/system stays the owner's, for the drop-ins
# `systemctl edit` makes, which a reinstall never touches.
#
# With DESTDIR set the tree is staged under it (for an image or a package) and the running
# system is left alone: no apt-get, no users, no chown, no systemctl. A virtual environment
# built under DESTDIR has its paths rewritten to work once the tree is copied to /.
#
# Raspberry Pi OS Bookworm, 32-bit (armhf) and 64-bit (arm64): nothing here depends on the
# architecture. pip takes wheels from piwheels, which Raspberry Pi OS sets up in
# /etc/pip.conf. The gpio group exists on Raspberry Pi OS; elsewhere sysusers creates it.
set -eu

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

SRC=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
DESTDIR=${DESTDIR-}
PREFIX=${PREFIX:-/opt/linerec}
SYSCONFDIR=${SYSCONFDIR:-/etc/linerec}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/usr/local/lib/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/local/lib/sysusers.d}
TMPFILESDIR=${TMPFILESDIR:-/usr/local/lib/tmpfiles.d}
PARTS=${PARTS:-device}
BUILD_VENV=${BUILD_VENV:-1}
PYTHON=${PYTHON:-python3}
PIP_OPTIONS=${PIP_OPTIONS-}
APT=${APT:-1}
START=${START:-0}

# Paths end up inside unit files and scripts: keep them to characters that need no quoting.
for pair in "PREFIX=$PREFIX" "SYSCONFDIR=$SYSCONFDIR" "BINDIR=$BINDIR" "UNITDIR=$UNITDIR" \
    "SYSUSERSDIR=$SYSUSERSDIR" "TMPFILESDIR=$TMPFILESDIR"; do
    name=${pair%%=*}
    value=${pair#*=}
    case $value in
        /*) ;;
        *) die "$name '$value' must be an absolute path" ;;
    esac
    case $value in
        *[!A-Za-z0-9/._+-]*) die "$name '$value' may hold only letters, digits and / . _ + -" ;;
    esac
done
case $DESTDIR in
    '' | /*) ;;
    *) DESTDIR=$(pwd)/$DESTDIR ;;
esac
for flag in "BUILD_VENV=$BUILD_VENV" "APT=$APT" "START=$START"; do
    case ${flag#*=} in
        0 | 1) ;;
        *) die "${flag%%=*} '${flag#*=}' must be 0 or 1" ;;
    esac
done
WANT_DEVICE=0
WANT_AGENT=0
for part in $PARTS; do
    case $part in
        device) WANT_DEVICE=1 ;;
        agent) WANT_AGENT=1 ;;
        *) die "PARTS '$PARTS' may name only device and agent" ;;
    esac
done
[ "$WANT_DEVICE$WANT_AGENT" != 00 ] || die "PARTS is empty; name device, agent or both"

REAL=1 # 1: this machine is the target; 0: staging under DESTDIR
[ -z "$DESTDIR" ] || REAL=0
if [ "$REAL" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "installing on this machine needs root: sudo make install (or stage it with DESTDIR=...)"
fi
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml")
[ -n "$VERSION" ] || die "cannot find the version in $SRC/pyproject.toml"

EXTRAS=
UNITS=      # enabled, and restarted on an upgrade
UNIT_FILES= # installed too but never enabled: the units a timer starts
USERS=
if [ "$WANT_DEVICE" = 1 ]; then
    EXTRAS=device
    UNITS=linerec.service
    USERS=linerec
fi
if [ "$WANT_AGENT" = 1 ]; then
    EXTRAS=${EXTRAS:+$EXTRAS,}agent
    UNITS="${UNITS:+$UNITS }linerec-agent.service linerec-agent-web.service linerec-agent-purge.timer"
    UNIT_FILES=linerec-agent-purge.service
    USERS="${USERS:+$USERS }linerec-agent"
fi

say() {
    echo "install.sh: $*"
}

# -- packages ----------------------------------------------------------------------------------------

if [ "$REAL" = 1 ] && [ "$APT" = 1 ] && command -v apt-get >/dev/null 2>&1; then
    # python3-venv brings ensurepip (Debian leaves it out of python3); libsndfile1 and
    # libportaudio2 are loaded by soundfile and sounddevice where no wheel bundles them.
    wanted="python3-venv libsndfile1"
    [ "$WANT_DEVICE" = 0 ] || wanted="$wanted libportaudio2"
    missing=
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        say "installing$missing"
        apt-get update -q
        # shellcheck disable=SC2086  # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    fi
fi
if [ "$BUILD_VENV" = 1 ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "$PYTHON is missing or older than Python 3.11 (Raspberry Pi OS Bookworm has 3.11)"
fi

# -- files -------------------------------------------------------------------------------------------

root=$DESTDIR
share=$root$PREFIX/share/linerec
install -d -m 0755 "$root$PREFIX/bin" "$share/examples" "$root$PREFIX/share/doc/linerec" "$root$BINDIR" \
    "$root$UNITDIR" "$root$SYSUSERSDIR" "$root$TMPFILESDIR"
install -m 0644 "$SRC/README.md" "$SRC/CHANGELOG.md" "$root$PREFIX/share/doc/linerec/"
install -m 0644 "$SRC/examples/device.toml" "$SRC/examples/agent.toml" "$share/examples/"

# A unit's paths follow PREFIX and SYSCONFDIR when they are not the defaults.
put_unit() {
    sed -e "s|/opt/linerec/|$PREFIX/|g" -e "s|/etc/linerec/|$SYSCONFDIR/|g" "$SRC/systemd/$1" >"$root$UNITDIR/$1.tmp"
    chmod 0644 "$root$UNITDIR/$1.tmp"
    mv -f "$root$UNITDIR/$1.tmp" "$root$UNITDIR/$1"
}

# The units run the launcher, which stays put whatever happens to the virtual environment.
put_launcher() {
    cat >"$root$PREFIX/bin/$1.tmp" <<EOF
#!/bin/sh
# Runs $1 from linerec's virtual environment (scripts/install.sh).
if [ ! -x $PREFIX/venv/bin/$1 ]; then
    echo "$1: $PREFIX/venv is missing or incomplete; run 'sudo make install' in the linerec source" >&2
    exit 1
fi
exec $PREFIX/venv/bin/$1 "\$@"
EOF
    chmod 0755 "$root$PREFIX/bin/$1.tmp"
    mv -f "$root$PREFIX/bin/$1.tmp" "$root$PREFIX/bin/$1"
    ln -sfn "$PREFIX/bin/$1" "$root$BINDIR/$1"
}

# The example config, only where there is none: the owner's settings are never overwritten.
put_config() {
    name=$1
    group=$2
    target=$root$SYSCONFDIR/$name
    if [ -e "$target" ] || [ -L "$target" ]; then
        say "kept $SYSCONFDIR/$name; the current example is $PREFIX/share/linerec/examples/$name"
        return
    fi
    install -m 0640 "$SRC/examples/$name" "$target"
    [ "$REAL" = 0 ] || chown "root:$group" "$target"
    say "wrote $SYSCONFDIR/$name from the example: edit it before starting the service"
}

install -d -m 0755 "$root$SYSCONFDIR"
if [ "$WANT_DEVICE" = 1 ]; then
    install -m 0644 "$SRC/systemd/sysusers.d/linerec.conf" "$root$SYSUSERSDIR/linerec.conf"
    install -m 0644 "$SRC/systemd/tmpfiles.d/linerec.conf" "$root$TMPFILESDIR/linerec.conf"
fi
if [ "$WANT_AGENT" = 1 ]; then
    install -m 0644 "$SRC/systemd/sysusers.d/linerec-agent.conf" "$root$SYSUSERSDIR/linerec-agent.conf"
    install -m 0644 "$SRC/systemd/tmpfiles.d/linerec-agent.conf" "$root$TMPFILESDIR/linerec-agent.conf"
fi
if [ "$REAL" = 1 ]; then
    command -v systemd-sysusers >/dev/null 2>&1 || die "systemd-sysusers is missing; this needs a systemd system"
    for user in $USERS; do
        systemd-sysusers "$SYSUSERSDIR/$user.conf"
    done
fi
if [ "$WANT_DEVICE" = 1 ]; then
    put_config device.toml linerec
    put_launcher linerec
fi
if [ "$WANT_AGENT" = 1 ]; then
    put_config agent.toml linerec-agent
    put_launcher linerec-agent
fi
for unit in $UNITS $UNIT_FILES; do
    put_unit "$unit"
done

# -- the virtual environment -------------------------------------------------------------------------

venv=$root$PREFIX/venv
if [ "$BUILD_VENV" = 1 ]; then
    say "building $PREFIX/venv with linerec[$EXTRAS] (this takes a while on a Pi)"
    "$PYTHON" -m venv "$venv" || die "$PYTHON cannot make a virtual environment (apt-get install python3-venv)"
    # setuptools builds inside the source tree: take away what it leaves there that was not there before.
    leftovers=
    for made in build linerec.egg-info; do
        [ -e "$SRC/$made" ] || leftovers="$leftovers $made"
    done
    # shellcheck disable=SC2086  # PIP_OPTIONS is a list of options
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_OPTIONS --upgrade "${SRC}[${EXTRAS}]" \
        || die "pip could not install linerec[$EXTRAS] into $PREFIX/venv"
    for made in $leftovers; do
        rm -rf "${SRC:?}/$made"
    done
    if [ -n "$DESTDIR" ]; then
        # Scripts and pyvenv.cfg name the staging path: point them at where the tree will live.
        "$PYTHON" - "$venv" "$root$PREFIX" "$PREFIX" <<'EOF'
import sys
from pathlib import Path

venv, staged, final = Path(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
for path in [*venv.joinpath("bin").iterdir(), venv / "pyvenv.cfg"]:
    if path.is_file() and not path.is_symlink():
        data = path.read_bytes()
        if staged in data and b"\0" not in data:
            path.write_bytes(data.replace(staged, final))
EOF
    fi
    venv_state=built
else
    say "BUILD_VENV=0: $PREFIX/venv was not built; the launchers expect it there"
    venv_state=skipped
fi

# What was installed, for uninstall.sh.
cat >"$share/installed.tmp" <<EOF
VERSION=$VERSION
PARTS=$PARTS
UNITS=$UNITS
UNIT_FILES=$UNIT_FILES
USERS=$USERS
SYSCONFDIR=$SYSCONFDIR
BINDIR=$BINDIR
UNITDIR=$UNITDIR
SYSUSERSDIR=$SYSUSERSDIR
TMPFILESDIR=$TMPFILESDIR
VENV=$venv_state
EOF
mv -f "$share/installed.tmp" "$share/installed"

# -- systemd -----------------------------------------------------------------------------------------

if [ "$REAL" = 1 ]; then
    for user in $USERS; do
        systemd-tmpfiles --create "$TMPFILESDIR/$user.conf"
    done
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    # shellcheck disable=SC2086  # one word per unit
    systemctl enable --quiet $UNITS
    if [ -d /run/systemd/system ]; then
        if [ "$START" = 1 ]; then
            # shellcheck disable=SC2086
            systemctl restart $UNITS
        else
            # An upgrade: whatever was running runs the new code.
            # shellcheck disable=SC2086
            systemctl try-restart $UNITS
        fi
    fi
fi

say "installed linerec $VERSION ($PARTS) in $DESTDIR$PREFIX"
if [ "$REAL" = 1 ] && [ "$START" = 0 ]; then
    say "next: edit $SYSCONFDIR/*.toml, then 'sudo systemctl start $UNITS' (they also start at every boot)"
fi
