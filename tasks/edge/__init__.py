"""HASTE edge agent: watch a directory, pre-process the most promising files, upload them.

See ``README.md`` beside this file (the real-time agent) and ``docs/edge-policy.md`` (the
policy, the simulator and the synthetic streams).
"""
