"""``python -m plantstream``: the same command line as the ``plantstream`` script."""

from plantstream.cli.main import main

if __name__ == "__main__":
    main()
