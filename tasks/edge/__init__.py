"""HASTE edge agent: watch a directory, pre-process the most promising files, upload over a slow link."""
