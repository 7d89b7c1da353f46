#!/usr/bin/env bash
# Issue 15's sweep and start-up measurements in one command (docs/performance.md, "Founding sweep").
#
#   tools/bench-sweep.sh                       # the built moe (dotnet build lib/MoeNotebooks.Cli -c Release), 3 rounds
#   tools/bench-sweep.sh 5 shipped=lib/MoeNotebooks.Cli/bin/Release/net10.0 tc-off=lib/MoeNotebooks.Cli/bin/Release/net10.0:DOTNET_TieredCompilation=0
#
# Arguments: rounds, then variants LABEL=DIR[:VAR=VALUE[,VAR=VALUE...]] (DIR holds a built moe; the variables are set
# for that variant only, for A/B comparisons of runtime settings; users need none). Variants are interleaved round by
# round, so each comparison is made within the same minute of machine load. Per run it prints CPU seconds (user + sys,
# /usr/bin/time), wall seconds, and for the sweep its own rate ("per second": first point to last row, i.e. after
# start-up and reading the sweep file). The founding sweep is data/sweeps/founding-4800.json on one thread, pinned to
# core 0 (taskset -c 0) and unpinned; start-up is `moe evaluate data/scenarios/ep16.json` (whole process). The load
# average (uptime) is printed before and after: this VM is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=("built=lib/MoeNotebooks.Cli/bin/Release/net10.0")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(nproc) cores; load before: $(uptime | sed 's/.*load average: //')"
printf '%-10s %-22s %8s %8s %14s %14s\n' variant run cpu_s wall_s rate rate_per_cpu_s
run() { # label dir env pin what
    local label=$1 dir=$2 env=$3 pin=$4 what=$5 prefix=() t rate="" cpurate=""
    [ "$pin" = pinned ] && prefix=(taskset -c 0)
    if [ "$what" = sweep ]; then
        env ${env//,/ } /usr/bin/time -f '%U %S %e' -o "$out/t" "${prefix[@]}" "$dir/moe" sweep data/sweeps/founding-4800.json --threads 1 --out "$out/$label.csv" >"$out/log" 2>&1
        rate=$(grep -o '([0-9,]* per second' "$out/log" | tr -d '(,' | cut -d' ' -f1)
        cpurate=$(grep -o '[0-9,]* per CPU second' "$out/log" | tr -d ',' | cut -d' ' -f1 || true)
    else
        env ${env//,/ } /usr/bin/time -f '%U %S %e' -o "$out/t" "${prefix[@]}" "$dir/moe" evaluate data/scenarios/ep16.json >"$out/log" 2>&1
    fi
    read -r u s e <"$out/t"
    printf '%-10s %-22s %8.2f %8.2f %14s %14s\n' "$label" "$what $pin" "$(echo "$u + $s" | bc)" "$e" "${rate:+$rate/s}" "${cpurate:+$cpurate/s}"
}
for ((r = 1; r <= rounds; r++)); do
    for what in sweep evaluate; do
        for pin in pinned unpinned; do
            for v in "${variants[@]}"; do
                label=${v%%=*}; rest=${v#*=}; dir=${rest%%:*}; env=""
                [[ "$rest" == *:* ]] && env=${rest#*:}
                run "$label" "$dir" "$env" "$pin" "$what"
            done
        done
    done
done
echo "# load after: $(uptime | sed 's/.*load average: //')"
# Every variant's sweep must write the same CSV (the results do not depend on runtime settings).
md5sum "$out"/*.csv | awk '{print $1}' | sort -u | awk 'END { if (NR != 1) { print "# CSVs differ between variants!"; exit 1 } else print "# CSVs identical across variants" }'
