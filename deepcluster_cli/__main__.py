import sys

try:
    from deepcluster_cli.cli import main
except ModuleNotFoundError as exc:  # run by an interpreter without the dependencies
    # (cli/deepcluster with DEEPCLUSTER_PYTHON or a bare python3): one line, not a traceback
    if (exc.name or "").split(".")[0] == "deepcluster_cli":
        raise  # our own module missing is a broken install or a bug: show it
    sys.exit(
        f"deepcluster: error: this Python ({sys.executable}) has no module '{exc.name}'; "
        "install deepcluster's dependencies there (make install), or run it with the Python "
        "that has them (DEEPCLUSTER_PYTHON=/path/to/python for cli/deepcluster)"
    )

if __name__ == "__main__":
    main()
