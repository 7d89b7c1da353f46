#!/usr/bin/env bash
# Checks what a new user meets on a fresh clone with only the .NET SDK and NO ../shared beside it (issue 16):
#  1. `dotnet run ... evaluate --format json` prints JSON only (no NuGet warnings before it);
#  2. the CLI installs as a local tool (dotnet pack + dotnet tool restore) and `dotnet moe evaluate` is timed;
#  3. every verb answers --help; `moe validate` works from the data carried in data/calibration;
#  4. a one-notebook report (default: notebook 01, whose formula check must compare with the transcription) and its
#     row in the index; with --all, the README's main job (every notebook).
# Prints the timings. Leaves the clone in $MOE_FRESH_DIR (default: a new temp folder) for inspection.
#
#   tools/check-fresh-clone.sh            # quick: one notebook
#   tools/check-fresh-clone.sh --all      # the main job too (minutes)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${MOE_FRESH_DIR:-$(mktemp -d /tmp/moe-fresh-XXXXXX)}"
mkdir -p "$work"
[ -e "$work/shared" ] && { echo "error: $work/shared exists; this check needs a clone without ../shared" >&2; exit 2; }
git clone -q "$repo" "$work/repo"
cd "$work/repo"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
t() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); printf '%.2f' "$(echo "$end - $start" | bc)"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

echo "== 1. dotnet run ... evaluate --format json (first call builds)"
s=$(t bash -c 'dotnet run --project lib/MoeNotebooks.Cli -c Release -- evaluate data/scenarios/ep16.json --format json > ../eval.json 2> ../eval.err')
python3 -c "import json,sys; d=json.load(open('../eval.json')); print('   stdout is JSON: totalSeconds =', d['totalSeconds'])" || fail "stdout is not JSON: $(head -3 ../eval.json)"
[ -s ../eval.err ] && fail "stderr not empty: $(head -3 ../eval.err)"
echo "   first call ${s} s"
s=$(t bash -c 'dotnet run --project lib/MoeNotebooks.Cli -c Release -- evaluate data/scenarios/ep16.json --format json > /dev/null')
echo "   next call ${s} s (dotnet run's build check)"

echo "== 2. local tool"
s=$(t bash -c 'dotnet pack lib/MoeNotebooks.Cli -c Release -nologo -v q > ../pack.log 2>&1 && dotnet tool restore > ../restore.log 2>&1') || fail "pack/restore: $(tail -5 ../pack.log ../restore.log)"
echo "   dotnet pack + dotnet tool restore: ${s} s"
for i in 1 2 3; do echo "   dotnet moe evaluate: $(t bash -c 'dotnet moe evaluate data/scenarios/ep16.json --format json > /dev/null') s"; done

echo "== 3. --help and validate"
for verb in $(dotnet moe help | awk 'NR>2 {print $1}' | grep -v '^help$'); do
  dotnet moe "$verb" --help > /dev/null || fail "moe $verb --help"
done
echo "   every verb answers --help"
dotnet moe validate > ../validate.txt || fail "moe validate: $(tail -3 ../validate.txt)"
echo "   moe validate: exit 0 ($(grep -c '' ../validate.txt) lines)"

echo "== 4. reports"
s=$(t bash -c 'dotnet moe report notebooks/01-ep16-derivation.ipynb > ../report-01.log 2>&1') || fail "report 01: $(tail -5 ../report-01.log)"
echo "   one-notebook report (01): ${s} s"
grep -q 'compared with the library' reports/01-ep16-derivation.html || fail "notebook 01 did not compare with the transcription"
grep -q 'not run yet' reports/index.html || fail "index does not list the notebooks not run yet"
echo "   01 compared its formula with the transcription; the index lists the others as not run yet"
if [ "${1:-}" = "--all" ]; then
  s=$(t bash -c 'dotnet run --project lib/MoeNotebooks.Cli -c Release -- report > ../report-all.log 2>&1') || fail "main job: $(tail -5 ../report-all.log)"
  echo "   main job (every notebook): ${s} s"
  grep -o 'class="\(ok\|skipped\|failed\)"' reports/index.html | sort | uniq -c
fi
echo "fresh-clone check passed ($work)"
