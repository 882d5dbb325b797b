# deepcluster's fish completion: what `deepcluster --show-completion` prints in fish.
# Regenerate with `make completion` (cli/completion/make_scripts.py).
complete --command deepcluster --no-files --arguments "(env _DEEPCLUSTER_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) deepcluster)" --condition "env _DEEPCLUSTER_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args _TYPER_COMPLETE_ARGS=(commandline -cp) deepcluster"
