"""``python -m deerflow_simulator``: the same command as ``deerflow sim``."""

from .cli import sim

if __name__ == "__main__":
    sim(prog_name="python -m deerflow_simulator")
