#!/usr/bin/env bash
# Build the pasta_msgs interface package with plain cmake against the ROS 2 Jazzy wheels of
# requirements-ros.txt and install it into the venv (no ROS install, nothing to source).
#
#   scripts/build_msgs.sh [VENV]      (default: .venv; run from anywhere)
#
# Idempotent: skips the build when the installed package was built from the same sources
# (a hash of pasta_msgs/ is kept in VENV/share/pasta_msgs/.source-hash) and still imports.
# Needs cmake >= 3.8, a C/C++ compiler and ninja or make on the machine (Debian: cmake g++
# ninja-build).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
SRC="$ROOT/pasta_msgs"
BUILD="$ROOT/build/pasta_msgs"

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install cmake g++)" >&2; exit 2; }
done
hash_now="$(cd "$SRC" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
stamp="$VENV/share/pasta_msgs/.source-hash"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash_now" ]] \
   && "$PY" -c "from pasta_msgs.msg import InstanceArray; from pasta_msgs.srv import Recalibrate, SetPrompts, SelectModel; from pasta_msgs.action import Recalibrate as RecalibrateAction" 2>/dev/null; then
  echo "pasta_msgs is up to date in $VENV"
  exit 0
fi

# The wheels' exported CMake files name the wheel builder's include folders: point them at
# this venv's (scripts/fix_wheel_cmake.py, shared with scripts/colcon_build.sh).
"$PY" "$ROOT/scripts/fix_wheel_cmake.py" "$VENV"

generator="Unix Makefiles"
command -v ninja >/dev/null && generator="Ninja"
rm -rf "$BUILD"
mkdir -p "$ROOT/build"
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
cmake -S "$SRC" -B "$BUILD" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF >"$ROOT/build/pasta_msgs.log" 2>&1 \
  || { tail -30 "$ROOT/build/pasta_msgs.log" >&2; echo "error: cmake configure of pasta_msgs failed (log: build/pasta_msgs.log)" >&2; exit 1; }
cmake --build "$BUILD" -j "${BUILD_JOBS:-2}" >>"$ROOT/build/pasta_msgs.log" 2>&1 \
  || { tail -30 "$ROOT/build/pasta_msgs.log" >&2; echo "error: build of pasta_msgs failed (log: build/pasta_msgs.log)" >&2; exit 1; }
cmake --install "$BUILD" >>"$ROOT/build/pasta_msgs.log" 2>&1
"$PY" -c "from pasta_msgs.msg import InstanceArray; from pasta_msgs.srv import Recalibrate" \
  || { echo "error: pasta_msgs was installed but does not import" >&2; exit 1; }
echo "$hash_now" >"$stamp"
echo "pasta_msgs built and installed into $VENV"
