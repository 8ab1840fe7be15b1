"""``python -m simpletasks`` is the ``simpletasks`` command."""

from simpletasks.cli import main

main()
