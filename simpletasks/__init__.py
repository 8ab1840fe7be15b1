"""simpletasks: run many small, data-heavy tasks from a queue on cloud VMs and lab machines."""

__version__ = "0.1.0"
