"""No cyclic garbage collection while a large piece of work runs.

A snapshot build, or the validation of a whole config, allocates many objects that live on
(messages, resources, snapshots, parsed documents) or are freed by reference counting. The
allocations trigger full collections that walk the server's whole heap — every stream,
every snapshot — again and again, for nothing. Paused, the next collection after the work
does it once. Pauses may nest and overlap (a worker thread's with the loop's): only the
pause that found collection enabled enables it again, so it ends enabled once all are done
or earlier, never disabled for good.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
