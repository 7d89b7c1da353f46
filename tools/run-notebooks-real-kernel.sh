#!/usr/bin/env bash
# Runs notebooks in the REAL .NET Interactive kernel (dotnet-repl, pinned in .config/dotnet-tools.json), the way
# Polyglot Notebooks / Jupyter run them. This catches what the in-process runner used by `dotnet test` cannot, e.g.
# the kernel's own FSharp.Core 10.0 vs the 10.1 that Plotly.NET 6 asks for.
#
#   tools/run-notebooks-real-kernel.sh                      # every notebooks/*.ipynb, sorted
#   tools/run-notebooks-real-kernel.sh path/to/a.ipynb ...  # just these
#
# Each notebook runs in a fresh kernel with its own folder as the working directory (relative `#r "../.build/..."`
# paths resolve from there). Executed copies (with outputs) go to $MOE_REAL_KERNEL_OUT (default .build/real-kernel/).
# Exit status: 0 when every cell of every notebook succeeded, 1 otherwise (each failure is named on stderr).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${MOE_REAL_KERNEL_OUT:-$repo/.build/real-kernel}"
timeout_s="${MOE_REAL_KERNEL_TIMEOUT_S:-900}"
mkdir -p "$out"

cd "$repo"
dotnet tool restore >/dev/null

notebooks=()
if [ "$#" -gt 0 ]; then
  for nb in "$@"; do
    [ -f "$nb" ] || { echo "error: no such notebook: $nb" >&2; exit 2; }
    notebooks+=("$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb")")
  done
else
  while IFS= read -r nb; do notebooks+=("$nb"); done < <(find "$repo/notebooks" -maxdepth 1 -name '*.ipynb' 2>/dev/null | LC_ALL=C sort)
fi

if [ "${#notebooks[@]}" -eq 0 ]; then
  echo "real kernel: no notebooks/*.ipynb to run"
  exit 0
fi

# Lists the error outputs of an executed notebook as "cell N: message" lines (N counts all cells, 1-based).
describe_errors() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "  (see $1)"
import json, sys
nb = json.load(open(sys.argv[1], encoding="utf-8"))
for number, cell in enumerate(nb.get("cells", []), 1):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            message = (output.get("evalue") or output.get("ename") or "error").strip().splitlines()
            print(f"  cell {number}: {message[0] if message else 'error'}")
PY
}

failed=0
for nb in "${notebooks[@]}"; do
  name="$(basename "$nb" .ipynb)"
  shown="${nb#"$repo"/}"
  executed="$out/$name.ipynb"
  log="$out/$name.log"
  rm -f "$executed"
  start=$(date +%s)
  status=0
  # dotnet repl resolves relative #r paths from the directory it is started in (--working-dir does not do that).
  (cd "$(dirname "$nb")" && timeout "$timeout_s" dotnet repl --run "$nb" --exit-after-run \
      --output-format ipynb --output-path "$executed") >"$log" 2>&1 || status=$?
  seconds=$(( $(date +%s) - start ))
  errors=""
  if [ -f "$executed" ] && grep -q '"output_type": *"error"' "$executed"; then
    errors="$(describe_errors "$executed")"
  fi
  # Charts must not load anything from the network (ChartDisplay inlines plotly.js once per kernel).
  if [ -f "$executed" ] && grep -q -e 'cdn\.plot\.ly' -e 'cdnjs\.cloudflare\.com' -e 'require\.min\.js' "$executed"; then
    errors="${errors}  outputs load scripts from a CDN (expected plotly.js inline): $(grep -o -m1 -e 'https://cdn[^"\\ ]*' "$executed" | head -1)"
  fi
  if [ "$status" -eq 0 ] && [ -z "$errors" ] && [ -f "$executed" ]; then
    echo "ok      $shown (${seconds} s)"
  else
    failed=1
    if [ "$status" -eq 124 ]; then
      echo "FAILED  $shown: timed out after ${timeout_s} s (log: $log)" >&2
    else
      echo "FAILED  $shown: dotnet repl exit $status after ${seconds} s (log: $log, executed copy: $executed)" >&2
    fi
    [ -n "$errors" ] && echo "$errors" >&2
  fi
done
exit "$failed"
