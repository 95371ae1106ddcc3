"""A DeerFlow trace continues into the cluster: the drop-in call's span joins the caller's span
(or DeerFlow's X-Trace-Id), and the controller's and agent's spans continue it, all exported over
real OTLP/gRPC to the receiver."""

from __future__ import annotations

import uuid

from deerflow_bench import ReceivedSpan
from deerflow_dropins.chat_model import ClusterChatModel
from deerflow_dropins.tools import get_web_search_tool

from .conftest import CLIENT_SERVICE, DropinCluster

KIND_CLIENT = 3


def _trace(cluster: DropinCluster, trace_id: str, n: int) -> dict[str, ReceivedSpan]:
    """The first ``n`` spans of ``trace_id`` to arrive, by name."""
    cluster.tracer.force_flush()
    spans = cluster.background.run(
        cluster.receiver.wait_for_spans(n, timeout_s=20, where=lambda s: s.trace_id == trace_id)
    )
    return {s.name: s for s in spans}


def test_a_tool_call_continues_the_callers_span_through_controller_and_agent(
    dropin_cluster: DropinCluster,
) -> None:
    tracer = dropin_cluster.tracer.get_tracer("deerflow-graph")
    run_id = uuid.uuid4()
    with tracer.start_as_current_span("researcher") as node:
        get_web_search_tool(2, cluster=dropin_cluster.conn).invoke(
            {"query": "traced query"}, config={"run_id": run_id}
        )
    trace_id = format(node.get_span_context().trace_id, "032x")

    spans = _trace(dropin_cluster, trace_id, 5)

    call, submit = spans["deerflow_dropins.web_search"], spans["deerflow.submit"]
    schedule, execute = spans["deerflow.schedule"], spans["deerflow.execute"]
    assert call.parent_span_id == spans["researcher"].span_id
    assert (call.service, call.kind) == (CLIENT_SERVICE, KIND_CLIENT)
    assert call.attributes["langchain.run_id"] == str(run_id)
    assert submit.parent_span_id == call.span_id
    assert schedule.parent_span_id == submit.span_id and schedule.service == "deerflow-controller"
    assert execute.parent_span_id == schedule.span_id and execute.service == "deerflow-agent"
    assert execute.attributes["deerflow.handler"] == "search"


async def test_a_model_call_without_a_span_joins_deerflows_trace_id(
    dropin_cluster: DropinCluster,
) -> None:
    deerflow_trace_id = uuid.uuid4().hex  # what DeerFlow generates for X-Trace-Id
    model = ClusterChatModel(model="sim-model", cluster=dropin_cluster.conn)

    await model.ainvoke("hello", config={"metadata": {"deerflow_trace_id": deerflow_trace_id}})

    spans = _trace(dropin_cluster, deerflow_trace_id, 4)
    call = spans["deerflow_dropins.llm"]
    assert call.attributes["deerflow.trace_id"] == deerflow_trace_id
    assert "langchain.run_id" in call.attributes
    assert spans["deerflow.submit"].parent_span_id == call.span_id
    assert spans["deerflow.execute"].attributes["deerflow.handler"] == "llm"
