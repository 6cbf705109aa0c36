#!/usr/bin/env bash
# Builds the Trellis contracts to wasm32-unknown-unknown, reproducibly.
#
#   contracts/build.sh               refresh the committed genesis/contracts/
#   contracts/build.sh --out DIR     build into DIR instead (what the artifact test does)
#
# For each crate in CONTRACTS below, writes <name>.wasm (the crate name without
# its `trellis-` prefix), then SHA256SUMS and TOOLCHAIN (the rustc that built
# them). The same source and toolchain give the same bytes wherever the
# checkout and $CARGO_HOME live: profile `contract` (root Cargo.toml) strips
# symbols and debug info, and absolute paths are remapped in what is left.
set -euo pipefail

# The contracts built into genesis. One crate per line.
CONTRACTS=(
  trellis-receivables
  trellis-counter
)

TARGET=wasm32-unknown-unknown
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
OUT="$ROOT/genesis/contracts"

die() { echo "contracts/build.sh: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

CARGO=${CARGO:-cargo}
RUSTC=${RUSTC:-rustc}

sysroot=$("$RUSTC" --print sysroot)
if [[ ! -d "$sysroot/lib/rustlib/$TARGET/lib" ]]; then
    die "the $TARGET target is not installed for $("$RUSTC" -V); run: rustup target add $TARGET"
fi

# A target dir of its own: never the workspace's, so this can run from inside
# `cargo test` without waiting on the outer build's lock.
TARGET_DIR=${TRELLIS_CONTRACT_TARGET_DIR:-$ROOT/target/contract-build}
mkdir -p "$TARGET_DIR" "$OUT"
TARGET_DIR=$(cd "$TARGET_DIR" && pwd -P)
OUT=$(cd "$OUT" && pwd -P)
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
CARGO_HOME_REAL=$CARGO_HOME_DIR
[[ -d $CARGO_HOME_DIR ]] && CARGO_HOME_REAL=$(cd "$CARGO_HOME_DIR" && pwd -P)

# Nothing from the caller's environment may change the flags or the profile.
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS \
      RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_BUILD_TARGET CARGO_BUILD_TARGET_DIR
while read -r var; do unset "$var"; done < <(compgen -e | grep '^CARGO_PROFILE_' || true)
# When several prefixes match, the last one given wins: most specific last.
flags=(
    # A 64 KiB stack (rustc's default is 1 MiB): a call's memory is reset for
    # the next one page by page, so a small footprint is a fast call.
    "-Clink-arg=-zstack-size=65536"
    "--remap-path-prefix=$ROOT=/trellis"
    "--remap-path-prefix=$CARGO_HOME_REAL=/cargo"
    "--remap-path-prefix=$CARGO_HOME_DIR=/cargo"
    "--remap-path-prefix=$TARGET_DIR=/target"
)
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS

cd "$ROOT"
names=()
for crate in "${CONTRACTS[@]}"; do
    name=${crate#trellis-}
    echo "contracts/build.sh: building $crate -> $name.wasm" >&2
    # One crate per cargo run, so adding a contract never changes another's
    # dependency features (and so its bytes).
    "$CARGO" build --locked --profile contract --target "$TARGET" \
        --target-dir "$TARGET_DIR" -p "$crate"
    install -m 0644 "$TARGET_DIR/$TARGET/contract/${crate//-/_}.wasm" "$OUT/$name.wasm"
    names+=("$name.wasm")
done

(cd "$OUT" && sha256sum "${names[@]}" > SHA256SUMS)
"$RUSTC" -V > "$OUT/TOOLCHAIN"
echo "contracts/build.sh: wrote to $OUT:" >&2
cat "$OUT/SHA256SUMS" >&2
