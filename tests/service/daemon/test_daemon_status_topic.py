"""The daemon's status query with real sockets: a real daemon, a real query client."""

import pytest

import service.daemon.daemon as daemon_module
from service.daemon.daemon import Daemon
from service.zmq_api.client import PredictionClient
from tests.service._loop_harness import Rig, loop_settings, wait_until

pytestmark = pytest.mark.slow

_WAIT_S = 30.0
"""Generous: the suite runs on a loaded 2-core machine."""


@pytest.fixture
def settings(tmp_path, exported, source_id):
    _, window, step = exported
    return loop_settings(tmp_path, window, step, source_id)


def test_a_burst_of_status_queries_renders_the_status_far_fewer_times_than_answered(
    settings, source_id, monkeypatch
):
    """The query socket in the loop's process serves the status document kept for
    ``[api] snapshot_max_age_s``: a client asking in a loop must not make the loop's process
    render it (holding its interpreter lock) for every reply. Renders are counted at the
    function that builds the document, which every reader goes through. A change of the
    loop's own (the stream appearing) is answered once the kept copy is older than that."""
    renders: list[int] = []
    build = daemon_module.status_document

    def counted(daemon):
        renders.append(1)
        return build(daemon)

    monkeypatch.setattr(daemon_module, "status_document", counted)
    api = settings.api.model_copy(update={"snapshot_max_age_s": 2.0})
    rig = Rig(source_id)
    with (
        Daemon(settings.model_copy(update={"api": api})) as daemon,
        PredictionClient(daemon.publisher.endpoint, daemon.query.endpoint) as client,
    ):
        before = len(renders)
        answered = [client.status() for _ in range(100)]
        rendered = len(renders) - before
        rig.start()
        try:
            wait_until(
                lambda: client.status()["stream"]["connected"], _WAIT_S, "the stream in the status"
            )
        finally:
            rig.kill()
    assert all(status["stream"]["connected"] is False for status in answered)
    assert rendered <= len(answered) // 10, f"{rendered} renders for {len(answered)} queries"


def test_an_operators_change_is_in_the_next_status_reply(settings):
    """Kept copies are dropped by a control call: no wait for the snapshot to age."""
    api = settings.api.model_copy(update={"snapshot_max_age_s": 5.0})
    with (
        Daemon(settings.model_copy(update={"api": api})) as daemon,
        PredictionClient(daemon.publisher.endpoint, daemon.query.endpoint) as client,
    ):
        before = client.status()["policy"]
        changed = daemon.policy.model_copy(update={"min_pgd": 0.7})
        daemon.set_policy(changed)
        after = client.status()["policy"]
    assert before["min_pgd"] == 0.6 and after["min_pgd"] == 0.7
