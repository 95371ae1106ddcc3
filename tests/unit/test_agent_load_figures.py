"""What the core keeps of an agent's heartbeat load, and which CPU figure placement reads."""

from __future__ import annotations

import math

from deerflow_controller.core.model import HandlerTraits, TaskSpec

from .scheduling import JOB, make


def test_a_heartbeat_keeps_the_machines_cpu_and_the_agents_own_apart() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 4, 0.0)
    sched.heartbeat("a", 0, 97.0, 40.0, 1.0, process_cpu_percent=0.5)
    agent = sched.agents["a"]
    assert (agent.cpu_percent, agent.process_cpu_percent, agent.memory_percent) == (97.0, 0.5, 40.0)


def test_load_figures_an_agent_reports_out_of_range_are_clamped_into_0_to_100() -> None:
    sched = make()
    sched.agent_joined("a", ["echo"], 4, 0.0)
    sched.heartbeat("a", 0, math.nan, 250.0, 1.0, process_cpu_percent=-3.0)
    agent = sched.agents["a"]
    assert (agent.cpu_percent, agent.memory_percent, agent.process_cpu_percent) == (0.0, 100.0, 0.0)


def test_a_cpu_task_avoids_a_busy_machine_even_when_its_agent_is_idle() -> None:
    sched = make()
    traits = {"crunch": HandlerTraits(kind="cpu", default_duration_s=1.0)}
    sched.agent_joined("quiet-host", ["crunch"], 1, 0.0, traits=traits)
    sched.agent_joined("busy-host", ["crunch"], 1, 0.0, traits=traits)
    # Other work keeps busy-host's machine at 95 %; its agent itself does nothing.
    sched.heartbeat("busy-host", 0, 95.0, 10.0, 1.0, process_cpu_percent=1.0)
    sched.heartbeat("quiet-host", 0, 10.0, 10.0, 1.0, process_cpu_percent=1.0)
    sched.take()
    sched.submit(JOB, "j", [TaskSpec("t", "crunch")], 2.0)
    assert list(sched.take().assignments) == ["quiet-host"]
