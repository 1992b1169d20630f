#!/usr/bin/env bash
# Lint the Yocto layer (yocto/meta-quoll) with oelint-adv, once for each release its
# LAYERSERIES_COMPAT names. Fails on any error or warning; infos are hidden (--info shows
# them). oelint-adv and the two packages that decide its results are pinned below and
# installed with pip into target/oelint-venv (rebuilt when missing or at other versions).
#
#   scripts/lint-yocto.sh           lint, print the findings, exit 1 on an error or warning
#   scripts/lint-yocto.sh --info    also print the infos (they never fail the run)
#
# Environment:
#   QUOLL_PYTHON  the python3 to create the venv with (default: the first of `python3` on
#                 PATH and /usr/bin/python3 whose venv module works; Debian's needs the
#                 python3-venv package)
#
# What is linted: every .bb, .bbappend and .bbclass, and conf/layer.conf. oelint-adv reads an
# .inc only through the recipe that requires it, so an .inc no recipe of the layer requires
# (the image snippet) is linted through a stub recipe that requires it; only findings in
# the layer's own files count.
#
# Suppressed rules, for all files (inline `# nooelint:` comments cover single lines):
#   oelint.vars.homepageping  fetches HOMEPAGE over the network: CI has none, and the answer
#                             of a web server is no property of the layer
#   oelint.var.mandatoryvar.HOMEPAGE
#                             Quoll has no public homepage yet, and a made-up URL would be
#                             worse than none: when it has one, set Cargo.toml's `homepage`
#                             and the recipe's HOMEPAGE (tests/yocto_layer.rs keeps them
#                             equal) and drop this line
#   oelint.vars.srcurifile    the recipe's first SRC_URI entry is ${QUOLL_GIT_URI}, a git://
#                             URI set in local.conf that the linter cannot see; it reports
#                             the first file:// entry instead (and against quoll-crates.inc,
#                             so an inline suppression cannot reach it)
set -euo pipefail
cd "$(dirname "$0")/.."

OELINT_PINS=(oelint-adv==9.11.2 oelint-parser==8.13.2 oelint-data==1.5.26)
SUPPRESS=(oelint.vars.homepageping oelint.var.mandatoryvar.HOMEPAGE oelint.vars.srcurifile)
VENV=target/oelint-venv
LAYER=yocto/meta-quoll

show_info=0
case "${1:-}" in
    "") ;;
    --info) show_info=1 ;;
    *) echo "usage: $0 [--info]" >&2; exit 2 ;;
esac

venv_ok() { # the venv runs and holds exactly the pinned versions
    [ -x "$VENV/bin/oelint-adv" ] && [ -f "$VENV/quoll-pins" ] &&
        [ "$(cat "$VENV/quoll-pins")" = "${OELINT_PINS[*]}" ] &&
        "$VENV/bin/oelint-adv" --version >/dev/null 2>&1
}

if ! venv_ok; then
    echo "lint-yocto: installing ${OELINT_PINS[*]} into $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    made=0
    for py in ${QUOLL_PYTHON:-python3 /usr/bin/python3}; do
        command -v "$py" >/dev/null || continue
        if "$py" -m venv "$VENV" >/dev/null 2>&1; then
            made=1
            break
        fi
        rm -rf "$VENV"
    done
    if [ "$made" = 0 ]; then
        echo "lint-yocto: no python3 here can create a venv with pip (on Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    echo "lint-yocto: venv made with $py ($("$VENV/bin/python" --version 2>&1))"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${OELINT_PINS[@]}"
    echo "${OELINT_PINS[*]}" >"$VENV/quoll-pins"
fi

mapfile -t files < <(find "$LAYER" -type f \( -name '*.bb' -o -name '*.bbappend' -o -name '*.bbclass' \) | sort)
files+=("$LAYER/conf/layer.conf")

# Stub recipes for the .inc files no recipe of the layer requires.
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
while IFS= read -r inc; do
    name=$(basename "$inc")
    if grep -Eqs "^(require|include)[[:space:]]+(.*/)?$name[[:space:]]*$" \
        $(find "$LAYER" -type f -name '*.bb'); then
        continue
    fi
    stub="$stubs/$(basename "$inc" .inc)-oelint-stub.bb"
    {
        echo 'SUMMARY = "oelint-adv stub"'
        echo 'LICENSE = "MIT"'
        case "$inc" in */images/*) echo 'inherit core-image' ;; esac
        echo "require $PWD/$inc"
    } >"$stub"
    files+=("$stub")
done < <(find "$LAYER" -type f -name '*.inc' | sort)

series=$(sed -n 's/^LAYERSERIES_COMPAT_quoll *= *"\(.*\)"/\1/p' "$LAYER/conf/layer.conf")
[ -n "$series" ] || { echo "lint-yocto: no LAYERSERIES_COMPAT_quoll in $LAYER/conf/layer.conf" >&2; exit 1; }

opts=(--quiet --exit-zero --messageformat '{path}:{line}:{severity}:{id}:{msg}')
[ "$show_info" = 1 ] || opts+=(--hide info)
for rule in "${SUPPRESS[@]}"; do opts+=(--suppress "$rule"); done
failed=0
for release in $series; do
    # --exit-zero: the findings decide, below; a crash still exits non-zero.
    out=$(OELINT_SKIP_CONFIG=1 "$VENV/bin/oelint-adv" "${opts[@]}" --release "$release" \
        "${files[@]}" 2>&1) || {
        printf '%s\n' "$out" >&2
        echo "lint-yocto: oelint-adv failed (release $release)" >&2
        exit 1
    }
    errors=0 warnings=0 other=0
    while IFS= read -r line; do
        case "$line" in
            "") continue ;;
            "$stubs"/*) continue ;; # about a stub itself
            "$PWD/$LAYER"/*) line=${line#"$PWD/"} ;;
            *) other=$((other + 1)) ;; # not a finding: say it, and fail
        esac
        case "$line" in
            *:error:*) errors=$((errors + 1)) ;;
            *:warning:*) warnings=$((warnings + 1)) ;;
        esac
        printf '%s\n' "$line"
    done <<<"$out"
    echo "oelint-adv ${OELINT_PINS[0]#*==} --release $release: $errors errors, $warnings warnings"
    [ "$errors" = 0 ] && [ "$warnings" = 0 ] && [ "$other" = 0 ] || failed=1
done
exit "$failed"
