"""The server process itself, apart from what it serves: waiting for a burst of work to settle
(the pipeline's debounce), and memory handed back to the OS once it has."""

from xds_server.runtime.debounce import Debouncer
from xds_server.runtime.memory import MemoryReleaser, malloc_trim, resident_bytes

__all__ = ["Debouncer", "MemoryReleaser", "malloc_trim", "resident_bytes"]
