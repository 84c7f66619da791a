"""``python -m crdask``: the same as the ``crdask`` command."""

from .cli import main

if __name__ == "__main__":
    main()
