"""The pure scheduling core: the state machine, its ready queue, timers and validation, and
the policies it is given. No I/O, no clock of its own: fed events with the time, it answers
with decisions (see docs/ARCHITECTURE.md)."""
