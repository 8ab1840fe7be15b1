"""Task types shipped with simpletasks (installed as ``simpletasks.tasks``).

Each lives in a package of its own and depends only on the public API of simpletasks.
``BUILTIN`` lists the import paths the CLI registers unless told otherwise.
"""

BUILTIN = [
    "simpletasks.tasks.noop:NoOpTask",
    "simpletasks.tasks.tiering:HasteTierTask",
]
