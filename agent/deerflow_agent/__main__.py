"""``python -m deerflow_agent``: the same as the ``deerflow-agent`` command."""

from deerflow_agent.main import main

if __name__ == "__main__":
    main(prog_name="deerflow-agent")
