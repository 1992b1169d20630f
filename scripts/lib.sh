# Shared helpers for the scripts in this folder: section headers with timing.
# Source it; it defines `section NAME CMD...` and `print_timings`.

_QUOLL_TIMINGS=()
# Start of the whole run (a caller such as .ci/run may export an earlier one).
export QUOLL_T0=${QUOLL_T0:-$(date +%s)}

# section NAME CMD... — run CMD with a header, record and print its wall time.
# Returns CMD's exit status (the caller decides whether to stop).
section() {
    local name=$1
    shift
    local t0 t1 rc
    printf '\n==> %s  (%s)\n' "$name" "$(date -u +%H:%M:%S)"
    t0=$(date +%s.%N)
    set +e
    "$@"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    local dt
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        printf '<== %s: ok in %ss\n' "$name" "$dt"
        _QUOLL_TIMINGS+=("$(printf '%-40s %7ss  ok' "$name" "$dt")")
    else
        printf '<== %s: FAILED (exit %s) after %ss\n' "$name" "$rc" "$dt"
        _QUOLL_TIMINGS+=("$(printf '%-40s %7ss  FAILED (exit %s)' "$name" "$dt" "$rc")")
    fi
    return "$rc"
}

print_timings() {
    printf '\n==> timings\n'
    # Lines recorded by a calling script (exported as QUOLL_PRE_TIMINGS, one a line).
    [ -z "${QUOLL_PRE_TIMINGS:-}" ] || printf '%s\n' "$QUOLL_PRE_TIMINGS" | sed 's/^/    /'
    local line
    for line in "${_QUOLL_TIMINGS[@]}"; do
        printf '    %s\n' "$line"
    done
    printf '    %-40s %7ss\n' "total" "$(( $(date +%s) - QUOLL_T0 ))"
}

# The recorded lines, for export to a child script as QUOLL_PRE_TIMINGS.
timings_text() {
    [ "${#_QUOLL_TIMINGS[@]}" -eq 0 ] || printf '%s\n' "${_QUOLL_TIMINGS[@]}"
}
