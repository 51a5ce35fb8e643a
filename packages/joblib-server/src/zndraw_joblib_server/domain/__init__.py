"""The queue's rules, pure: no SQL, no I/O (see :mod:`.rules`)."""
