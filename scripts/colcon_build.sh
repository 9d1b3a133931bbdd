#!/usr/bin/env bash
# colcon workspace build of pasta_msgs and pasta_ros with the colcon of the venv, against the
# ROS 2 Jazzy wheels installed there (the venv is the underlay, as /opt/ros/jazzy is on a robot).
#
#   scripts/colcon_build.sh [VENV]      (default: .venv; run from anywhere)
#
# Builds into build/colcon/ and installs into install/ (install/setup.sh, install/pasta_ros/...).
# pasta_msgs/ lies inside the pasta_ros package folder, where colcon's crawl does not look (it
# stops at a package), so both folders are given as base paths. Idempotent: skips the build
# when install/ was built from the same sources with the same venv (a hash is kept in
# install/.pasta-source-hash). Needs cmake, a C/C++ compiler and ninja or make (apt).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
BUILD="$ROOT/build/colcon"
INSTALL="$ROOT/install"

[[ -x "$VENV/bin/colcon" ]] || { echo "error: no colcon in $VENV (run make setup: requirements-ros.txt)" >&2; exit 2; }
for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install cmake g++)" >&2; exit 2; }
done

# Everything that ends up in install/: both packages' sources and data files, and this build.
hash_now="$(cd "$ROOT" && { echo "$VENV"; find package.xml setup.py setup.cfg requirements.txt \
    resource launch config models pasta_ros pasta_msgs scripts/colcon_build.sh \
    scripts/fix_wheel_cmake.py -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
    | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)"
stamp="$INSTALL/.pasta-source-hash"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash_now" && -x "$INSTALL/pasta_ros/lib/pasta_ros/pasta_node" ]]; then
  echo "colcon workspace is up to date in $INSTALL"
  exit 0
fi

"$PY" "$ROOT/scripts/fix_wheel_cmake.py" "$VENV"
# CMAKE_GENERATOR: colcon passes --cmake-args through, cmake >= 3.15 reads the generator here.
CMAKE_GENERATOR="Unix Makefiles"
command -v ninja >/dev/null && CMAKE_GENERATOR="Ninja"
export CMAKE_GENERATOR
# Only the venv underneath: no sourced ROS or other workspace leaks into the build.
unset COLCON_PREFIX_PATH PYTHONPATH
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
rm -f "$stamp"
# setup.py install never removes a module that was moved or deleted: start pasta_ros afresh
# (3 s); pasta_msgs keeps its incremental cmake build.
rm -rf "$BUILD/pasta_ros" "$INSTALL/pasta_ros"
mkdir -p "$BUILD"
start=$(date +%s)
"$VENV/bin/colcon" --log-base "$BUILD/log" build \
  --base-paths "$ROOT" "$ROOT/pasta_msgs" \
  --build-base "$BUILD" --install-base "$INSTALL" \
  --parallel-workers 1 \
  --cmake-args -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
  >"$BUILD/colcon_build.log" 2>&1 \
  || { tail -40 "$BUILD/colcon_build.log" >&2; echo "error: colcon build failed (log: build/colcon/colcon_build.log, build/colcon/log/)" >&2; exit 1; }
[[ -x "$INSTALL/pasta_ros/lib/pasta_ros/pasta_node" ]] \
  || { echo "error: colcon build did not install pasta_ros/lib/pasta_ros/pasta_node" >&2; exit 1; }
echo "$hash_now" >"$stamp"
echo "colcon built pasta_msgs and pasta_ros into $INSTALL in $(( $(date +%s) - start )) s"
