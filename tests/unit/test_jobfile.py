"""The job-file reader follows the SDK's Task: every field of it can be set from a job file."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from deerflow_controller.client import Task
from deerflow_controller.jobfile import JobFileError, load_tasks

# A value unlike the default for each annotation a Task field may have.
SAMPLES: dict[object, object] = {
    str: "x",
    int: 7,
    float: 1.5,
    Sequence[str]: ["a", "b"],
    Mapping[str, str]: {"k": "v"},
    object: {"p": [1, 2]},
}


def test_every_field_of_the_sdk_task_can_be_set_in_a_job_file(tmp_path: Path) -> None:
    hints = typing.get_type_hints(Task)
    task: dict[str, object] = {}
    for f in dataclasses.fields(Task):
        if f.name == "cache":
            task[f.name] = "refresh"
        elif f.name == "inputs":
            task[f.name] = "all"
        elif hints[f.name] is bool:
            task[f.name] = not f.default
        else:
            task[f.name] = SAMPLES[hints[f.name]]
    path = tmp_path / "job.json"
    path.write_text(json.dumps([task], indent=2))
    [loaded] = load_tasks(path)
    assert {name: getattr(loaded, name) for name in task} == task


def test_a_job_file_gives_the_line_each_task_of_an_array_starts_on(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('[\n  {"id": "a", "handler": "echo"},\n\n  {"id": "b", "handler": 5}\n]')
    with pytest.raises(JobFileError, match=r'job.json line 4: task "b": "handler" must be a str'):
        load_tasks(path)


def test_a_job_file_names_inputs_as_all_or_a_list_of_ids(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps(
            [
                {"id": "a", "handler": "echo"},
                {"id": "b", "handler": "echo", "depends_on": ["a"], "inputs": ["a"]},
                {"id": "c", "handler": "echo", "depends_on": ["a", "b"], "inputs": "all"},
            ]
        )
    )
    _, b, c = load_tasks(path)
    assert b.inputs == ["a"]
    assert c.inputs == "all"
    assert c.to_proto().inputs_all
    assert list(b.to_proto().inputs) == ["a"]
    path.write_text(json.dumps([{"id": "b", "handler": "echo", "inputs": "a"}]))
    with pytest.raises(JobFileError, match=r'task "b": "inputs" must be "all" or a list of'):
        load_tasks(path)
