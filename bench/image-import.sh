#!/usr/bin/env bash
# What importing a realistic image costs: `mm image import` (sha256 of every blob and the
# diff_id of every layer, checked while unpacking into an empty store) beside
# `umoci unpack`, the plain `sha256sum` + `tar -xzf` pipeline, and `tar -xzf` alone, on a
# fresh tmpfs and on the disk (ext4). The image is a Debian 12 minbase rootfs made with
# debootstrap (`apt-get clean`ed, as image builds do), packed by umoci twice: in three
# layers (/usr; /etc and /var; the rest) and in one.
#
# Run as root. Tools missing (hyperfine, umoci, debootstrap, jq, GNU time) are installed
# with apt-get. The rootfs and the OCI layout are cached in
# ${XDG_CACHE_HOME:-~/.cache}/mm-bench, so reruns skip debootstrap and packing.
#
#   RUNS=5 ./bench/image-import.sh
#
# RUNS (default 5) timed runs per command, after 1 warm-up; DISK_DIR (default /var/tmp):
# where the disk runs happen (about 15 GB free needed); MIRROR: the Debian mirror for debootstrap. Results:
# target/bench-image-import/.
#
# Every timed run starts from an empty output directory (for mm: a fresh, empty store),
# after `sync`, so that no run pays for the previous one's writeback; no cache is dropped.
# On tmpfs the previous output is deleted. On the disk it is moved aside and deleted only
# at exit: this VM's root ext4 has no journal, and without one ext4 refuses to reuse an
# inode deleted less than 60 s ago (360 s while its inode table block is dirty), checking
# every candidate (fs/ext4/ialloc.c, recently_deleted). Deleting 6,700 files before each
# run makes the next run's file creation scan past all of them: three `tar -xzf` runs in a
# row with `rm -rf` between them took 2.3, 5.0 and 11.1 s here. For the same reason the
# script waits, before the disk runs, until 6 minutes have passed since an earlier run of
# it deleted its files.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-5}
DISK_DIR=${DISK_DIR:-/var/tmp}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mm-bench
rootfs=$cache/bookworm-minbase
# Bump when the packing recipe below changes: the cached layout is rebuilt.
layout=$cache/oci-bookworm-minbase-v2
results=$repo/target/bench-image-import

say() { printf '\n== [%ds] %s\n' "$SECONDS" "$*"; }
die() { echo "image-import.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (umoci unpack and mm import must create device nodes and set owners)"

missing=()
for tool in hyperfine:hyperfine umoci:umoci debootstrap:debootstrap jq:jq /usr/bin/time:time; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null
fi

cargo build -q --release
mm=$repo/target/release/mm
built_from=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$repo" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] ||
    built_from="$built_from + uncommitted changes"

# Everything temporary lives under $work (on the disk) and its tmpfs mount; both go at exit.
mkdir -p "$DISK_DIR" "$cache" "$results"
work=$(mktemp -d "$DISK_DIR/mm-bench.XXXXXX")
tmpfs=$work/tmpfs
disk=$work/disk
grave=$disk/moved-aside
quiet_stamp=$cache/disk-deleted-at
cleanup() {
    set +e
    mountpoint -q "$tmpfs" && umount "$tmpfs"
    rm -rf "$work" "$cache"/*.tmp.$$*
    sync
    date +%s >"$quiet_stamp"
}
trap cleanup EXIT
mkdir -p "$tmpfs" "$disk" "$grave"
mount -t tmpfs -o size=4g,mode=0755 mm-bench "$tmpfs"
# Nothing is deleted on the disk until exit: about 60 outputs of ~170 MB each.
avail_gb=$(($(stat -f -c '%a*%S' "$disk") / 1000000000))
[ "$avail_gb" -ge 15 ] || die "$DISK_DIR has ${avail_gb} GB free; the disk runs need about 15 GB"
disk_fs=$(stat -f -c %T "$disk")
[ "$disk_fs" = ext2/ext3 ] || echo "note: $DISK_DIR is $disk_fs, not ext4" >&2

# --- the image -----------------------------------------------------------------------

if [ ! -d "$rootfs" ]; then
    say "debootstrap --variant=minbase bookworm (cached in $rootfs)"
    rm -rf "$rootfs.tmp.$$"
    debootstrap --variant=minbase bookworm "$rootfs.tmp.$$" "$MIRROR" >"$cache/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $cache/debootstrap.log"
    # What every image build does last: no downloaded .debs in the image.
    chroot "$rootfs.tmp.$$" apt-get clean
    mv "$rootfs.tmp.$$" "$rootfs"
fi

# umoci layer by layer: unpack the image so far, add to its rootfs, repack a diff layer.
if [ ! -d "$layout" ]; then
    say "packing the rootfs with umoci (cached in $layout)"
    new=$layout.tmp.$$
    rm -rf "$new"
    umoci init --layout "$new"

    umoci new --image "$new:multi"
    umoci unpack --image "$new:multi" "$tmpfs/bundle"
    cp -a "$rootfs/usr" "$tmpfs/bundle/rootfs/"
    umoci repack --refresh-bundle --history.created_by "/usr" --image "$new:multi" "$tmpfs/bundle"
    cp -a "$rootfs/etc" "$rootfs/var" "$tmpfs/bundle/rootfs/"
    umoci repack --refresh-bundle --history.created_by "/etc /var" --image "$new:multi" "$tmpfs/bundle"
    find "$rootfs" -mindepth 1 -maxdepth 1 ! -name usr ! -name etc ! -name var \
        -exec cp -a {} "$tmpfs/bundle/rootfs/" \;
    umoci repack --history.created_by "the rest" --image "$new:multi" "$tmpfs/bundle"
    rm -rf "$tmpfs/bundle"

    umoci new --image "$new:single"
    umoci unpack --image "$new:single" "$tmpfs/bundle"
    cp -a "$rootfs/." "$tmpfs/bundle/rootfs/"
    umoci repack --history.created_by "everything" --image "$new:single" "$tmpfs/bundle"
    rm -rf "$tmpfs/bundle"

    # Only for the correctness check: a whiteout and an opaque directory on top of multi.
    # umoci before 0.4.8 (bookworm has 0.4.7) writes `insert` layers without the tar
    # footer (umoci#436, fixed by umoci#534); when the last file's size is not a multiple
    # of 512, its padding is missing too, which GNU tar refuses. `whiteouts` keeps clear
    # of that (a 512-byte file); `short-tail` is exactly that case.
    umoci insert --image "$new:multi" --tag whiteouts --whiteout /usr/share/doc
    mkdir -p "$new.apt"
    head -c 512 /dev/zero | tr '\0' '#' >"$new.apt/only-this"
    umoci insert --image "$new:whiteouts" --opaque "$new.apt" /etc/apt
    echo 'APT::Sandbox::User "root";' >"$new.apt/only-this"
    umoci insert --image "$new:multi" --tag short-tail --opaque "$new.apt" /etc/apt
    rm -rf "$new.apt"

    umoci gc --layout "$new"
    mv "$new" "$layout"
fi

# The layer blobs of a tag, bottom first, as "HEX SIZE".
layers() {
    local manifest
    manifest=$(jq -r --arg t "$1" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$layout/index.json")
    jq -r '.layers[] | "\(.digest | sub("^sha256:"; "")) \(.size)"' \
        "$layout/blobs/sha256/${manifest#sha256:}"
}

# Empties OUT for the next run: deleted on tmpfs, moved into GRAVE on the disk (see above).
cat >"$work/reset.sh" <<'RESET'
#!/bin/sh
set -e
if [ -e "$1" ]; then
    if [ -n "${2:-}" ]; then mv "$1" "$(mktemp -u -p "$2")"; else rm -rf "$1"; fi
fi
mkdir "$1"
sync
RESET

# The two peers as scripts taking the output directory: per layer, sha256sum -c of the
# blob then tar -xzf of it; and tar -xzf alone.
for tag in multi single; do
    {
        echo '#!/bin/sh'
        echo 'set -e; mkdir "$1"'
        layers "$tag" | while read -r hex _; do
            echo "echo '$hex  $layout/blobs/sha256/$hex' | sha256sum -c --status"
            echo "tar -xzf '$layout/blobs/sha256/$hex' -C \"\$1\""
        done
    } >"$work/pipeline-$tag.sh"
    {
        echo '#!/bin/sh'
        echo 'set -e; mkdir "$1"'
        layers "$tag" | while read -r hex _; do
            echo "tar -xzf '$layout/blobs/sha256/$hex' -C \"\$1\""
        done
    } >"$work/tar-$tag.sh"
done

# --- correctness (not timed) -----------------------------------------------------------

listing() { (cd "$1" && find . -printf '%p %y %m %U %G %s %l\n' | LC_ALL=C sort); }
contents() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }

say "correctness: mm image extract vs umoci unpack (on tmpfs)"
all_match=yes
for tag in multi single whiteouts short-tail; do
    c=$tmpfs/check-$tag
    mkdir -p "$c"
    umoci unpack --image "$layout:$tag" "$c/umoci" >/dev/null
    if ! MM_ROOT=$c/mm "$mm" image extract "oci:$layout:$tag" "$c/mm-rootfs" >/dev/null 2>"$c/mm.log"; then
        all_match=no
        echo "$tag: mm image extract FAILED (umoci unpack succeeded): $(tail -1 "$c/mm.log")"
        continue
    fi
    listing "$c/mm-rootfs" >"$c/mm.list"
    listing "$c/umoci/rootfs" >"$c/umoci.list"
    contents "$c/mm-rootfs" >"$c/mm.sums"
    contents "$c/umoci/rootfs" >"$c/umoci.sums"
    entries=$(wc -l <"$c/umoci.list")
    if cmp -s "$c/mm.list" "$c/umoci.list" && cmp -s "$c/mm.sums" "$c/umoci.sums"; then
        echo "$tag: MATCH ($entries entries: names, types, modes, owners, sizes, link targets, file contents)"
    else
        all_match=no
        echo "$tag: DIFFER (first differences, < mm  > umoci):"
        diff "$c/mm.list" "$c/umoci.list" | head -20 || true
        diff "$c/mm.sums" "$c/umoci.sums" | head -10 || true
        cp "$c/mm.list" "$results/$tag.mm.list"
        cp "$c/umoci.list" "$results/$tag.umoci.list"
    fi
done

say "the image"
image_line() {
    local tag=$1 n=0 gz=0 raw=0 hex size
    while read -r hex size; do
        n=$((n + 1))
        gz=$((gz + size))
        raw=$((raw + $(gzip -dc "$layout/blobs/sha256/$hex" | wc -c)))
    done < <(layers "$tag")
    local root=$tmpfs/check-$tag/umoci/rootfs
    awk -v tag="$tag" -v n="$n" -v gz="$gz" -v raw="$raw" \
        -v files="$(du -s --apparent-size -B1 "$root" | cut -f1)" -v entries="$(find "$root" | wc -l)" \
        'BEGIN { printf "%-7s %d layer(s): %.1f MB gzip, %.1f MB of tar; unpacked %.1f MB in %d entries\n",
                 tag, n, gz / 1e6, raw / 1e6, files / 1e6, entries }'
}
{
    image_line multi
    image_line single
    echo "layers of multi (gzip bytes): $(layers multi | awk '{printf "%s%.1f MB", sep, $2/1e6; sep=", "}')"
} | tee "$results/image.txt"
rm -rf "$tmpfs"/check-*

# --- timing ----------------------------------------------------------------------------

grave_of() { [ "$1" = ext4 ] && echo "$grave" || true; }

# Before the disk runs: no inode on it deleted by this script in the last 6 minutes.
quiet_disk() {
    local last=0 wait
    [ -f "$quiet_stamp" ] && last=$(cat "$quiet_stamp")
    wait=$((last + 360 - $(date +%s)))
    if [ "$wait" -gt 0 ]; then
        say "waiting ${wait} s: an earlier run deleted its files on the disk less than 6 minutes ago"
        sleep "$wait"
    fi
}

bench() { # FS-NAME DIR TAG
    local name=$1 dir=$2 tag=$3 out=$2/out
    say "hyperfine: $tag on $name ($dir), $RUNS runs + 1 warm-up"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    hyperfine --warmup 1 --runs "$RUNS" --style basic \
        --prepare "sh '$work/reset.sh' '$out' '$(grave_of "$name")'" \
        -n "mm image import" "MM_ROOT='$out/mm' '$mm' image import 'oci:$layout:$tag'" \
        -n "umoci unpack" "umoci unpack --image '$layout:$tag' '$out/bundle'" \
        -n "sha256sum + tar -xzf" "sh '$work/pipeline-$tag.sh' '$out/rootfs'" \
        -n "tar -xzf" "sh '$work/tar-$tag.sh' '$out/rootfs'" \
        --export-json "$results/$name-$tag.json" \
        --export-markdown "$results/$name-$tag.md"
}

# One untimed run of each under GNU time: where the time goes (user vs system CPU).
cpu() { # FS-NAME DIR TAG
    local name=$1 dir=$2 tag=$3 out=$2/out label cmd
    for label in "mm image import" "umoci unpack" "sha256sum + tar -xzf" "tar -xzf"; do
        case $label in
            mm*) cmd=(env "MM_ROOT=$out/mm" "$mm" image import "oci:$layout:$tag") ;;
            umoci*) cmd=(umoci unpack --image "$layout:$tag" "$out/bundle") ;;
            sha*) cmd=(sh "$work/pipeline-$tag.sh" "$out/rootfs") ;;
            tar*) cmd=(sh "$work/tar-$tag.sh" "$out/rootfs") ;;
        esac
        sh "$work/reset.sh" "$out" "$(grave_of "$name")"
        /usr/bin/time -o "$work/time" -f '%e %U %S %M' "${cmd[@]}" >/dev/null 2>"$work/cpu.log" ||
            { cat "$work/cpu.log" >&2; die "$label failed"; }
        read -r e u s m <"$work/time"
        printf '%-6s %-7s %-22s %6.2f s  %6.2f s  %6.2f s  %6d\n' "$name" "$tag" "$label" "$e" "$u" "$s" "$((m / 1024))"
    done
}

for tag in multi single; do
    bench tmpfs "$tmpfs" "$tag"
done
quiet_disk
for tag in multi single; do
    bench ext4 "$disk" "$tag"
done

say "one run each under GNU time (not hyperfine): elapsed, user, system CPU, max RSS"
{
    printf '%-6s %-7s %-22s %8s  %8s  %8s  %6s\n' fs image command elapsed user system 'RSS MB'
    for fs in tmpfs:"$tmpfs" ext4:"$disk"; do
        for tag in multi single; do
            cpu "${fs%%:*}" "${fs#*:}" "$tag"
        done
    done
} | tee "$results/cpu.txt"

# --- summary -----------------------------------------------------------------------------

say "medians (s) and ratios (a peer's median / mm's; above 1 means mm is faster)"
{
    printf '%-6s %-7s %8s %8s %8s %8s   %9s %9s %9s\n' \
        fs image mm umoci sha+tar tar 'umoci/mm' 'sha+tar/mm' 'tar/mm'
    for fs in tmpfs ext4; do
        for tag in multi single; do
            jq -r --arg fs "$fs" --arg tag "$tag" '
                [.results[].median] as $m
                | [$fs, $tag, $m[0], $m[1], $m[2], $m[3], $m[1]/$m[0], $m[2]/$m[0], $m[3]/$m[0]]
                | @tsv' "$results/$fs-$tag.json"
        done
    done | while IFS=$'\t' read -r f t a b c d r1 r2 r3; do
        printf '%-6s %-7s %8.2f %8.2f %8.2f %8.2f   %8.2fx %9.2fx %8.2fx\n' \
            "$f" "$t" "$a" "$b" "$c" "$d" "$r1" "$r2" "$r3"
    done
    echo "mm built from $built_from; $(nproc) CPUs; $(uname -r); hyperfine $(hyperfine --version | cut -d' ' -f2)"
    echo "correctness (mm image extract == umoci unpack for multi, single, whiteouts, short-tail): $all_match"
} | tee "$results/summary.txt"
echo "results: $results/ (deleting the outputs kept on the disk)"
