# deepcluster's bash completion: what `deepcluster --show-completion` prints in bash.
# Regenerate with `make completion` (cli/completion/make_scripts.py).
_deepcluster_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _DEEPCLUSTER_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _deepcluster_completion deepcluster
