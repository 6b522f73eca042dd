#!/usr/bin/env bash
# Each plugin installs on its own: build the kernel's wheel and each plugin's wheel, install
# kernel + that one plugin into a fresh virtualenv, and check that `dataworkflows plugins`
# lists exactly that plugin (and that the kernel alone lists none).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
PYTHON="$(command -v python3)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DIST="$WORK/dist"

# a clean environment: no DATAWORKFLOWS_* settings (e.g. DATAWORKFLOWS_LOAD_PLUGINS) leak in
clean_env=(env -i "PATH=/usr/bin:/bin" "HOME=$WORK" "LANG=C.UTF-8")

"${UV[@]}" build -q --wheel --package dataworkflows -o "$DIST"
KERNEL_WHEEL="$(ls "$DIST"/dataworkflows-[0-9]*.whl)"

listed() {  # venv -> the plugin names `dataworkflows plugins --json` shows, one per line
  "${clean_env[@]}" "$1/bin/dataworkflows" plugins --json \
    | "$1/bin/python" -c 'import json, sys; print("\n".join(sorted(p["name"] for p in json.load(sys.stdin))))'
}

venv="$WORK/venv-kernel"
"${UV[@]}" venv -q --python "$PYTHON" "$venv"
"${UV[@]}" pip install -q --python "$venv/bin/python" "$KERNEL_WHEEL"
if [ -n "$(listed "$venv")" ]; then
  echo "FAIL: the kernel alone lists plugins: $(listed "$venv")"; exit 1
fi
"${clean_env[@]}" "$venv/bin/dataworkflows" plugins | grep -q "No plugins installed"
echo "ok: kernel alone lists no plugin"

failed=0
for project in plugins/*/pyproject.toml connectors/*/pyproject.toml; do
  [ -f "$project" ] || continue
  read -r dist expected < <("$PYTHON" - "$project" <<'PY'
import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))["project"]
names = sorted(data.get("entry-points", {}).get("dataworkflows", {}))
print(data["name"], ",".join(names))
PY
)
  "${UV[@]}" build -q --wheel --package "$dist" -o "$DIST"
  wheel="$(ls "$DIST"/"${dist//-/_}"-[0-9]*.whl)"
  venv="$WORK/venv-$dist"
  "${UV[@]}" venv -q --python "$PYTHON" "$venv"
  "${UV[@]}" pip install -q --python "$venv/bin/python" "$KERNEL_WHEEL" "$wheel"
  got="$(listed "$venv" | paste -sd, -)"
  if [ "$got" = "$expected" ]; then
    echo "ok: $dist alone lists exactly: $got"
  else
    echo "FAIL: $dist: expected plugins [$expected], dataworkflows plugins shows [$got]"
    failed=1
  fi
done
exit "$failed"
