"""Imported (and discarded) by the bootstrap's warm_up(): the import machinery's first run in
a forked process is slow, so it is paid before a function's handler module is imported."""


def probe(value: object) -> object:
    return value
