"""Fleets of daemons on machines reached over ssh: ``simpletasks fleet start|status|stop|logs``.

Modules: :mod:`.hosts` (which machines), :mod:`.ssh` (the system ``ssh`` client, key-based,
non-interactive), :mod:`.state` (the local record of where daemons run), :mod:`.remote`
(what runs on each host), :mod:`.status` (the status file each daemon keeps up to date).
"""
