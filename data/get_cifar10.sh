#!/usr/bin/env bash
# data/get_cifar10.sh [DEST] — download CIFAR-10 (binary version), verify its published MD5,
# unpack it into DEST/cifar-10-batches-bin (DEST defaults to the directory of this script).
# Used by `make data` and by vit_train when the default dataset directory is missing.
# Exit status: 0 when the dataset is in place; non-zero with one line on stderr otherwise.
set -euo pipefail

URL="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5="c32a1d4ab5d03f1284b67883e8d87530"  # published on https://www.cs.toronto.edu/~kriz/cifar.html
DEST="${1:-$(cd "$(dirname "$0")" && pwd)}"
ARCHIVE="$DEST/cifar-10-binary.tar.gz"
OUT="$DEST/cifar-10-batches-bin"

fail() { echo "get_cifar10: error: $*" >&2; exit 1; }

if [ -f "$OUT/data_batch_1.bin" ] && [ -f "$OUT/data_batch_5.bin" ] && [ -f "$OUT/test_batch.bin" ]; then
  echo "get_cifar10: CIFAR-10 already in $OUT"
  exit 0
fi
mkdir -p "$DEST" || fail "cannot create $DEST"
command -v md5sum >/dev/null || fail "md5sum not found (install coreutils)"

verify() { [ "$(md5sum "$1" | cut -d' ' -f1)" = "$MD5" ]; }

if [ -f "$ARCHIVE" ] && verify "$ARCHIVE"; then
  echo "get_cifar10: using the already downloaded $ARCHIVE"
else
  command -v curl >/dev/null ||
    fail "curl not found: install curl, or download $URL yourself into $DEST/ and run: make data"
  # A quiet probe first, so being offline is one line rather than curl's retry noise.
  curl -fsSIL --connect-timeout 15 -o /dev/null "$URL" 2>/dev/null ||
    fail "cannot reach $URL (offline?): put cifar-10-binary.tar.gz into $DEST/ (or its files into $OUT/) and run: make data"
  echo "get_cifar10: downloading $URL (163 MB) into $DEST"
  # Download to a temporary name so an interrupted transfer never looks like the archive.
  if ! curl -fL --retry 3 --connect-timeout 20 --progress-bar -o "$ARCHIVE.part" "$URL"; then
    rm -f "$ARCHIVE.part"
    fail "cannot download $URL (offline?): put cifar-10-binary.tar.gz into $DEST/ (or its files into $OUT/) and run: make data"
  fi
  mv "$ARCHIVE.part" "$ARCHIVE"
  if ! verify "$ARCHIVE"; then
    mv "$ARCHIVE" "$ARCHIVE.bad"
    fail "checksum mismatch for $ARCHIVE (expected MD5 $MD5; kept as $ARCHIVE.bad): download it again with: make data"
  fi
fi
echo "get_cifar10: checksum OK, unpacking"
tar -xzf "$ARCHIVE" -C "$DEST" || fail "cannot unpack $ARCHIVE"
[ -f "$OUT/test_batch.bin" ] || fail "unpacking $ARCHIVE did not produce $OUT/test_batch.bin"
echo "get_cifar10: CIFAR-10 ready in $OUT"
