#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU only, no web UI) from the llama.cpp sources
# vendored in the llama-cpp-python sdist on PyPI, once per machine.
#
# The binary is cached outside the work tree so every checkout and CI run on the
# machine reuses it:
#   ${COMPAT_ASGI_LLAMA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/compat-asgi/llama/$VERSION}/llama-server
# Beside it, templates/ holds two real chat templates from the same source tree
# (ChatML with Hermes tool calls, and Qwen3 with <think> reasoning) for the tiny
# test models. Prints the binary's path on its last line. The tests find it the
# same way (or through $LLAMA_SERVER). Nothing of llama.cpp is committed here.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DEST="${COMPAT_ASGI_LLAMA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/compat-asgi/llama/$VERSION}"
BIN="$DEST/llama-server"
JOBS="${LLAMA_BUILD_JOBS:-2}"
TEMPLATES="Qwen-Qwen2.5-7B-Instruct.jinja Qwen-Qwen3-0.6B.jinja"

have_binary() { [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; }
have_templates() {
    for t in $TEMPLATES; do [ -s "$DEST/templates/$t" ] || return 1; done
}

if have_binary && have_templates; then
    echo "$BIN"
    exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

# The sdist, not a wheel: its vendor/llama.cpp is the upstream source tree.
python3 -m pip download -q --no-binary :all: --no-deps --dest "$WORK" "llama-cpp-python==$VERSION"
tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
mkdir -p "$DEST/templates"
for t in $TEMPLATES; do cp "$SRC/models/templates/$t" "$DEST/templates/$t"; done

if ! have_binary; then
    command -v cmake >/dev/null && command -v g++ >/dev/null \
        || (apt-get update && apt-get install -y cmake g++ make)
    # Static, portable (no -march=native: the cache may outlive the CPU it was
    # built on), no UI (the prebuilt one would be downloaded at build time), no
    # TLS, no tests/examples: only what llama-server itself needs.
    cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
        >"$WORK/cmake.log" 2>&1 || { cat "$WORK/cmake.log" >&2; exit 1; }
    cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 \
        || { tail -50 "$WORK/build.log" >&2; exit 1; }
    # Copy then rename, so a concurrent reader never sees half a binary.
    cp "$WORK/build/bin/llama-server" "$BIN.tmp.$$"
    mv "$BIN.tmp.$$" "$BIN"
fi
echo "llama-server $VERSION ready in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
