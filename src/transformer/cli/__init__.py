"""The `transformer` command line: main.py parses, the other modules hold the commands.
Nothing in the package imports this folder."""
