#!/bin/bash
# `make install` / `make uninstall` (run by the Makefile; see README "Run as a service").
#   install.sh install|uninstall
# Environment: DESTDIR, BINDIR, SBINDIR, UNITDIR, CONFDIR, DOCDIR, MANDIR, COMPDIR, DATADIR, VENV.
# Every file installed is listed in $DATADIR/install-manifest, and uninstall removes exactly
# those. Units are configuration: one the admin edited is never overwritten (the new version
# goes next to it as NAME.s3encfs-new) nor removed. /etc/s3encfs (configs, keys) is never removed.
set -euo pipefail
: "${DESTDIR:=}" "${BINDIR:=/usr/local/bin}" "${SBINDIR:=/sbin}" "${UNITDIR:=/etc/systemd/system}"
: "${CONFDIR:=/etc/s3encfs}" "${DOCDIR:=/usr/local/share/doc/s3encfs}"
: "${MANDIR:=/usr/local/share/man}" "${COMPDIR:=/usr/local/share/bash-completion/completions}"
: "${DATADIR:=/usr/local/share/s3encfs}" "${VENV:?VENV not set}"
here=$(cd "$(dirname "$0")/.." && pwd)
manifest="$DESTDIR$DATADIR/install-manifest"
sums="$DESTDIR$DATADIR/units.sha256"   # what we installed, to tell an edited unit from ours

sha() { sha256sum "$1" | cut -d' ' -f1; }
recorded() { [ -f "$sums" ] && awk -v f="$1" '$2 == f {print $1}' "$sums" || true; }
record() { echo "$1" >> "$manifest.tmp"; }

install_unit() {  # src dst-name
    local src=$1 dst="$DESTDIR$UNITDIR/$2"
    if [ -e "$dst" ] && ! cmp -s "$src" "$dst" && [ "$(sha "$dst")" != "$(recorded "$UNITDIR/$2")" ]; then
        install -m 0644 "$src" "$dst.s3encfs-new"
        echo "kept your edited $dst; the new version is $dst.s3encfs-new (diff them)"
        record "$UNITDIR/$2.s3encfs-new"
        echo "$(sha "$dst") $UNITDIR/$2" >> "$sums.tmp"
        return
    fi
    install -m 0644 "$src" "$dst"
    record "$UNITDIR/$2"
    echo "$(sha "$dst") $UNITDIR/$2" >> "$sums.tmp"
}

do_install() {
    for h in s3encfs mount.s3encfs mount.fuse.s3encfs; do
        [ -x "$VENV/bin/$h" ] || { echo "$VENV/bin/$h missing: rerun make install"; exit 1; }
    done
    install -d "$DESTDIR$BINDIR" "$DESTDIR$SBINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$DOCDIR" \
        "$DESTDIR$MANDIR/man1" "$DESTDIR$COMPDIR" "$DESTDIR$DATADIR"
    : > "$manifest.tmp"; : > "$sums.tmp"
    ln -sfn "$VENV/bin/s3encfs" "$DESTDIR$BINDIR/s3encfs"; record "$BINDIR/s3encfs"
    for h in mount.s3encfs mount.fuse.s3encfs; do
        ln -sfn "$VENV/bin/$h" "$DESTDIR$SBINDIR/$h"; record "$SBINDIR/$h"
    done
    install -d -m 0700 "$DESTDIR$CONFDIR" "$DESTDIR$CONFDIR/keys"
    install -m 0600 "$here/docs/example.toml" "$DESTDIR$CONFDIR/example.toml.sample"
    record "$CONFDIR/example.toml.sample"
    for u in "$here"/systemd/*.service "$here"/systemd/*.timer; do install_unit "$u" "$(basename "$u")"; done
    # every doc, so the links between them (SERVICE.md -> KEYS.md ...) work
    install -m 0644 "$here/README.md" "$DESTDIR$DOCDIR/README.md"; record "$DOCDIR/README.md"
    for d in "$here"/docs/*.md; do
        install -m 0644 "$d" "$DESTDIR$DOCDIR/$(basename "$d")"; record "$DOCDIR/$(basename "$d")"
    done
    "$VENV/bin/python" -m s3encfs.manpage > "$DESTDIR$MANDIR/man1/s3encfs.1"
    record "$MANDIR/man1/s3encfs.1"
    _S3ENCFS_COMPLETE=bash_source "$VENV/bin/s3encfs" > "$DESTDIR$COMPDIR/s3encfs" || true
    record "$COMPDIR/s3encfs"
    record "$DATADIR/units.sha256"; record "$DATADIR/install-manifest"
    mv "$sums.tmp" "$sums"; mv "$manifest.tmp" "$manifest"
    echo "installed: $DESTDIR$BINDIR/s3encfs -> $VENV/bin/s3encfs (runtime dependencies only)"
    echo "  units in $DESTDIR$UNITDIR, docs in $DESTDIR$DOCDIR, man s3encfs, example config"
    echo "  $DESTDIR$CONFDIR/example.toml.sample; make uninstall removes all of it"
}

do_uninstall() {
    [ -f "$manifest" ] || { echo "nothing to uninstall ($manifest missing)"; exit 0; }
    while read -r f; do
        case "$f" in
        "$UNITDIR"/*.service|"$UNITDIR"/*.timer)
            if [ -e "$DESTDIR$f" ] && [ "$(sha "$DESTDIR$f")" != "$(recorded "$f")" ]; then
                echo "kept $DESTDIR$f: you edited it"; continue
            fi ;;
        esac
        rm -f "$DESTDIR$f"
    done < "$manifest"
    rmdir "$DESTDIR$DOCDIR" "$DESTDIR$DATADIR" 2>/dev/null || true
    echo "uninstalled; kept $DESTDIR$CONFDIR (configs and keys) and $VENV"
}

case "${1:-}" in
install) do_install ;;
uninstall) do_uninstall ;;
*) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
