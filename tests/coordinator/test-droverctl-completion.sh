#!/bin/bash
# droverctl's bash completion (coordinator/droverctl.bash-completion),
# sourced in bash and run as bash would on <TAB>, against the built
# droverctl (suite 'unit').  What it proves: commands complete from a
# prefix and in full, each command's options complete and only that
# command's (they come from `droverctl COMMAND --help`), the fixed words
# (plan, host) and --postcopy's values complete, and options before the
# command do not hide it.
#
#   test-droverctl-completion.sh COMPLETION_FILE DROVERCTL
set -u
completion=$1
droverctl=$2
fails=0

# stand-ins for bash-completion's own helpers are not needed: the file uses
# only compgen and complete
source "$completion" || { echo "not ok: cannot source $completion"; exit 1; }
complete -p droverctl >/dev/null || { echo "not ok: no completion registered for droverctl"; exit 1; }

# complete WORDS...: COMPREPLY for the last word
complete_words() {
    COMP_WORDS=("$droverctl" "$@")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMPREPLY=()
    _droverctl
    echo "${COMPREPLY[*]}"
}

# expect "WORDS" has|lacks WORD...
expect() {
    local words=$1 how=$2 got
    shift 2
    read -r -a w <<<"$words"
    [[ -z $words || $words == *" " ]] && w+=("")
    got=" $(complete_words "${w[@]}") "
    for want in "$@"; do
        if [[ $how == has && $got != *" $want "* ]] || [[ $how == lacks && $got == *" $want "* ]]; then
            echo "not ok: '$words<TAB>' $how '$want': got [$got]"
            fails=$((fails + 1))
        fi
    done
}

expect "mi" has migrate
expect "mi" lacks hosts evacuate
expect "" has hosts vms migrate evacuate plan jobs job watch cancel host help
expect "ev" has evacuate
expect "migrate g1 --w" has --wait
expect "migrate g1 --" has --to --bandwidth --downtime --postcopy --auto-converge --dry-run --cancel-on-interrupt --timeout --json
expect "migrate g1 --" lacks --maintenance
expect "evacuate h --" has --maintenance --wait --timeout
expect "evacuate h --" lacks --to
expect "hosts --" has --json --timeout --coordinator
expect "hosts --" lacks --wait --to
expect "watch job-1 --" has --cancel-on-interrupt
expect "--json ev" has evacuate
expect "-c unix:/x ho" has hosts host
expect "plan " has evacuate migrate
expect "host " has enable drain maintenance
expect "migrate g1 --postcopy " has allowed after
expect "help mi" has migrate

if ((fails)); then
    echo "$fails failures"
    exit 1
fi
echo "ok: completion of commands, options and values"
