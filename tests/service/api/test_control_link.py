"""The control link between the loop's process and a control plane in a process of its own:
a real daemon behind a real unix-socket listener, reached as the control process reaches it."""

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener

import httpx
import pytest
import uvicorn
from anyio._backends._asyncio import WorkerThread
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from firmware_bridge import Disarmed
from service.api.app import create_app
from service.api.query_watch import QueryWatch
from service.api.remote_daemon import (
    LoopUnreachableError,
    RemoteCallError,
    RemoteDaemon,
    rebuild_error,
)
from service.api.serving import base_url, uvicorn_config
from service.config import ApiSettings
from service.daemon.control_link import ControlLink, LinkAddress, answer, daemon_calls
from service.daemon.daemon import Daemon, DaemonStateError
from service.inference.model_files import ModelFileError
from service.inference.predictor import HostResourceError
from service.policy.limits import PolicyLimitError
from service.policy.settings import PolicySettings
from service.zmq_api.client import PredictionClient
from service.zmq_api.query import QueryServer
from service.zmq_api.settings import ZmqSettings
from tests.service._fault_injection import thread_refused
from tests.service._loop_harness import AUTH, TOKEN, free_port, loop_settings, wait_until


@pytest.fixture
def daemon(tmp_path, exported, source_id):
    """A daemon that has not started: every refusal it gives is real and cheap to get."""
    _, window, step = exported
    return Daemon(loop_settings(tmp_path, window, step, source_id), serve_queries=False)


@pytest.fixture
def link(daemon):
    with ControlLink(daemon) as link:
        yield link


def test_answers_and_refusals_cross_the_link_as_the_api_tells_them_apart(daemon, link):
    remote = RemoteDaemon(link.address)
    assert remote.readiness() == daemon.readiness()
    assert "daemon not started" in remote.readiness().reasons
    with pytest.raises(DaemonStateError) as local:
        daemon.arm()
    with pytest.raises(DaemonStateError) as crossed:
        remote.arm()
    assert str(crossed.value) == str(local.value)
    with pytest.raises(ModelFileError) as outside:
        remote.swap_model("/nowhere.onnx")
    assert outside.value.kind == "outside" and "/nowhere.onnx" in str(outside.value)
    off_grid = PolicySettings.model_validate({"target_electrodes": [[0, 20]]})
    with pytest.raises(PolicyLimitError) as local_limits:
        daemon.set_policy(off_grid)
    with pytest.raises(PolicyLimitError) as crossed_limits:
        remote.set_policy(off_grid)
    assert crossed_limits.value.problems == local_limits.value.problems
    assert remote.disarm("test") == Disarmed(was_armed=False, device_confirmed=False)
    assert remote.armed is False and remote.latest_prediction() is None
    assert remote.history.get(12345) is None
    assert remote.history.describe() == daemon.publisher.history.describe()


def test_a_policy_before_start_is_refused_as_a_state_locally_and_over_the_link(daemon, link):
    """As arm() before start: a DaemonStateError saying why (the API's 409), not an
    AttributeError on the loop that is not there yet (a 500)."""
    with pytest.raises(DaemonStateError) as local:
        daemon.set_policy(PolicySettings())
    with pytest.raises(DaemonStateError) as crossed:
        RemoteDaemon(link.address).set_policy(PolicySettings())
    assert str(local.value) == str(crossed.value) == "cannot change the policy: daemon not started"
    assert daemon.policy == daemon.settings.policy


def test_the_loops_metrics_are_served_from_the_control_process_registry(daemon, link):
    def names(text: bytes) -> set[str]:
        return {family.name for family in text_string_to_metric_families(text.decode())}

    remote = RemoteDaemon(link.address)
    served = names(generate_latest(remote.registry))
    assert served == names(generate_latest(daemon.registry))
    assert any(name.startswith("corticast_") for name in served)


def test_reads_are_kept_for_their_max_age_and_dropped_by_any_control_call(link):
    remote = RemoteDaemon(link.address, snapshot_max_age_s=3600)
    first = remote.status()
    assert remote.status() is first  # kept: the loop's process rendered it once
    remote.disarm("test")
    assert remote.status() is not first and remote.status() == first
    fresh = RemoteDaemon(link.address, snapshot_max_age_s=0)
    assert fresh.status() is not fresh.status()


def test_a_status_query_in_the_control_process_says_how_old_its_kept_status_is(link):
    """As the control process serves it: a real query socket reading the status through the
    link, kept for the max age; its replies say how long ago the loop's process answered."""
    remote = RemoteDaemon(link.address, snapshot_max_age_s=3600)
    settings = ZmqSettings(pub_endpoint="tcp://127.0.0.1:*", query_endpoint="tcp://127.0.0.1:*")
    with (
        QueryServer(settings, remote.history, remote.status_kept) as query,
        PredictionClient(None, query.endpoint) as client,
    ):
        first = client.status()
        assert client.status_age_s == 0.0
        assert client.status() == first and client.status_age_s > 0.0  # kept


def test_a_query_watch_tells_the_loop_where_its_queries_stand_at_its_first_round(daemon, link):
    """A failure's report from a control process killed meanwhile (its call served after the
    loop's process had cleared the reason for the next process) left the daemon not ready for
    good: the next process's watch told the loop only what changed from what it had told it,
    and had told it nothing. Now a watch's first round says where its queries stand."""
    remote = RemoteDaemon(link.address)
    settings = ZmqSettings(pub_endpoint="tcp://127.0.0.1:*", query_endpoint="tcp://127.0.0.1:*")
    daemon.control_queries_down = "ZeroMQ query server (control process) not running"  # stale
    with (
        QueryServer(settings, remote.history, remote.status_kept) as query,
        QueryWatch(query, remote, every_s=0.05),
    ):
        wait_until(lambda: daemon.control_queries_down is None, 30, "the queries said answered")


def test_a_connection_without_the_key_is_refused_and_the_link_keeps_serving(link):
    wrong = LinkAddress(link.address.path, b"x" * 32)
    with pytest.raises(AuthenticationError):
        Client(wrong.path, "AF_UNIX", authkey=wrong.authkey)
    assert RemoteDaemon(link.address).armed is False


def test_only_the_named_operations_are_served(daemon, link):
    calls = daemon_calls(daemon)
    for message in [("stop", ()), ("__init__", ()), "status", ("status",), None]:
        assert answer(calls, message)[:2] == ("error", "BadCall")
    with pytest.raises(RemoteCallError, match="not a call this link serves"):
        RemoteDaemon(link.address).call("stop")
    assert daemon.stopping is False


def test_a_load_out_of_host_resources_crosses_as_itself_not_as_a_plain_os_error():
    """The API answers it 503 (try again), where a plain OSError is a 422 (the file)."""

    def swap_model() -> None:
        raise HostResourceError("out of file descriptors")

    _, kind, message, detail = answer({"swap_model": swap_model}, ("swap_model", ()))
    crossed = rebuild_error(kind, message, detail)
    assert type(crossed) is HostResourceError and str(crossed) == "out of file descriptors"


def test_a_loop_process_that_does_not_answer_is_a_503_that_says_so(daemon):
    link = ControlLink(daemon).start()
    remote = RemoteDaemon(link.address)
    assert remote.armed is False
    link.stop()
    with pytest.raises(LoopUnreachableError, match="'armed'"):
        _ = remote.armed
    api = daemon.settings.api
    with _api_over(remote, api), httpx.Client(base_url=base_url(api)) as http:
        answered = http.get("/status")
        assert answered.status_code == 503
        assert "the loop's process did not answer 'status'" in answered.json()["detail"]
        assert http.get("/healthz").status_code == 200  # the control process is alive


def test_a_loop_process_that_takes_the_connection_but_never_answers_is_a_503_not_a_hang(
    tmp_path,
):
    """A stuck loop's process (stopped, or holding its interpreter lock) still has its
    listening socket: the kernel completes the connection, and nothing ever proves the key.
    A call that has to connect must then fail within its timeout, as one already connected
    does."""
    stuck = LinkAddress(str(tmp_path / "stuck.sock"), b"k" * 32)
    finished: list[BaseException | None] = []

    def call() -> None:
        try:
            RemoteDaemon(stuck).call("armed", timeout_s=0.5)
        except BaseException as err:
            finished.append(err)
        else:
            finished.append(None)

    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(stuck.path)
        listening.listen()  # connections queue here, and are never accepted
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(30)
        assert finished, "the call still waits for a loop's process that does not answer"
    assert isinstance(finished[0], LoopUnreachableError), finished
    assert "did not answer 'armed': not connected within 0.5 s; not sent" in str(finished[0])


def test_a_status_asked_before_an_operators_disarm_is_not_kept_after_it(tmp_path):
    """A status read that was in flight when a control call returned was rendered before the
    change (or may have been): kept, it would be served for the next ``snapshot_max_age_s``
    as if current. A stand-in for the loop's process answers over a real link: the first
    status only once released, each status numbered by when it was rendered."""
    address = LinkAddress(str(tmp_path / "loop.sock"), b"k" * 32)
    asked, release = threading.Event(), threading.Event()
    rendered: list[int] = []

    def answer(name: str) -> object:
        if name != "status":
            return Disarmed(was_armed=True, device_confirmed=True)
        rendered.append(len(rendered) + 1)
        number = rendered[-1]
        if number == 1:
            asked.set()
            release.wait(30)
        return {"rendered": number}

    with _stand_in_loop(address, answer):
        remote = RemoteDaemon(address, snapshot_max_age_s=3600)
        before: list[dict] = []
        reader = threading.Thread(target=lambda: before.append(remote.status()), daemon=True)
        reader.start()
        assert asked.wait(30), "the status read never reached the loop's process"
        remote.disarm("operator")  # answered while the read above is still in flight
        release.set()
        reader.join(30)
        assert before == [{"rendered": 1}]
        assert remote.status() == {"rendered": 2}


def test_a_call_whose_thread_cannot_start_fails_alone_and_the_link_goes_on(daemon, monkeypatch):
    """Threads can run out (a process limit, memory). The connection that met it is closed,
    its call fails as the loop unreachable, and the link goes on accepting: the next call, a
    disarm, is answered. Before, the error ended the accept thread, and every later call with
    it, while the loop stayed armed."""
    refused = thread_refused(monkeypatch, "corticast-control-call", once=True)
    with ControlLink(daemon) as link:
        with pytest.raises(LoopUnreachableError):
            RemoteDaemon(link.address, call_timeout_s=5).disarm("first")
        assert refused
        assert RemoteDaemon(link.address).disarm("second") == Disarmed(
            was_armed=False, device_confirmed=False
        )
        assert link.running


def test_a_call_whose_thread_cannot_start_is_a_control_fault_that_disarms_first(
    tmp_path, exported, source_id, monkeypatch
):
    """The call that found no thread may have been an operator's disarm, answered 503 while
    stimulation stayed armed, and nothing but a log line said so. Now it is a ``control``
    fault: disarmed first, counted."""
    with _armed_in_dry_run(tmp_path, exported, source_id) as daemon:
        refused = thread_refused(monkeypatch, "corticast-control-call", once=True)
        with ControlLink(daemon) as link:
            with pytest.raises(LoopUnreachableError):
                RemoteDaemon(link.address, call_timeout_s=5).disarm("operator's")
            assert refused
        status = daemon.bridge.status()
    assert not status.armed
    assert status.last_disarm_cause == "fault"
    assert "no thread to serve a control call" in status.last_disarm_reason
    assert daemon.supervisor.fault_counts() == {"control": 1.0}


def test_a_disarm_for_which_no_thread_can_be_had_disarms_on_the_event_loop(
    tmp_path, exported, source_id, monkeypatch
):
    """``/control/disarm`` runs on a worker thread; where none is idle and threads ran out, it
    was answered 500 and stimulation stayed armed. Now it disarms on the event loop itself.
    The API serves the loop's daemon in its own process here, as with ``[api] own_process =
    false``; in the control process the route is the same."""
    with _armed_in_dry_run(tmp_path, exported, source_id) as daemon:
        api = daemon.settings.api
        with _api_over(daemon, api), httpx.Client(base_url=base_url(api), timeout=30) as http:

            def refused(self) -> None:
                raise RuntimeError("can't start new thread")

            monkeypatch.setattr(WorkerThread, "start", refused)
            answer = http.post("/control/disarm", headers=AUTH, json={"reason": "no threads"})
        status = daemon.bridge.status()
    assert answer.status_code == 200, answer.text
    assert answer.json()["was_armed"] is True
    assert not status.armed and status.last_disarm_reason == "operator: no threads"


def test_a_stop_waits_once_for_all_the_calls_stuck_in_the_loop_not_once_for_each(
    daemon, monkeypatch
):
    """Each call the loop's process serves has a thread; one stuck in a call that does not
    return (an arm behind a hung audit log write, one more at each retry) was given 2 s at
    the link's stop, each in turn: twenty of them held a SIGTERM's exit for 40 s. Now they
    share the 2 s."""
    release = threading.Event()
    held = []

    def status_held() -> dict:
        held.append(1)
        release.wait(60)
        return {}

    monkeypatch.setattr(daemon, "status", status_held)
    link = ControlLink(daemon).start()
    callers = [
        threading.Thread(target=_call_ignoring_its_fate, args=(link.address,), daemon=True)
        for _ in range(20)
    ]
    try:
        for caller in callers:
            caller.start()
        wait_until(lambda: len(held) == len(callers), 30, "every call held in the loop")
        stopping = threading.Thread(target=link.stop)
        stopping.start()
        stopping.join(30)
        assert not stopping.is_alive(), "the link's stop still waits on the held calls"
    finally:
        release.set()
        link.stop()


def _call_ignoring_its_fate(address: LinkAddress) -> None:
    """A status call over its own connection, however it ends."""
    with contextlib.suppress(LoopUnreachableError):
        RemoteDaemon(address, call_timeout_s=60).status()


@contextmanager
def _armed_in_dry_run(tmp_path, exported, source_id) -> Iterator[Daemon]:
    """A daemon not started, its bridge opened in dry run and armed, until the block ends."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id, bridge={"dry_run": True})
    daemon = Daemon(settings, serve_queries=False)
    daemon._open_bridge()  # what start() opens; the rest of the loop is not needed here
    try:
        daemon.bridge.arm()
        yield daemon
    finally:
        daemon.bridge.close()


def test_a_disarm_leaves_the_http_server_answering_while_the_loop_says_whether_it_is_armed(
    tmp_path,
):
    """``/control/disarm`` reads its body on the event loop, then asks the loop's process, in
    one call over the link, to disarm and whether it is armed after: a slow loop's process
    must hold up that request alone, never every other one the control process serves. A
    stand-in for the loop's process over a real link keeps its answer until another request
    has been answered. One call: asked as two (the disarm, then ``armed``), a link lost
    between them answered a disarm that happened as a 503."""
    address = LinkAddress(str(tmp_path / "loop.sock"), b"k" * 32)
    asked, answered_meanwhile = threading.Event(), threading.Event()
    calls: list[str] = []

    def answer(name: str) -> object:
        calls.append(name)
        asked.set()
        answered_meanwhile.wait(30)
        return Disarmed(was_armed=True, device_confirmed=True), False

    api = ApiSettings(port=free_port(), token=TOKEN)
    with _stand_in_loop(address, answer):
        remote = RemoteDaemon(address, call_timeout_s=60)  # the stand-in's wait is no timeout
        try:
            with _api_over(remote, api), httpx.Client(base_url=base_url(api), timeout=60) as http:
                disarmed: list[httpx.Response] = []
                disarming = threading.Thread(
                    target=lambda: disarmed.append(
                        http.post("/control/disarm", headers={"Authorization": f"Bearer {TOKEN}"})
                    ),
                    daemon=True,
                )
                disarming.start()
                assert asked.wait(30), "the disarm never asked the loop's process"
                try:
                    alive = http.get("/healthz", timeout=20)
                except httpx.TimeoutException:
                    alive = None
                answered_meanwhile.set()
                disarming.join(60)
            assert alive is not None and alive.status_code == 200, (
                "the control process answered nothing while a disarm waited on the loop"
            )
            assert disarmed[0].status_code == 200
            assert disarmed[0].json() == {
                "armed": False,
                "was_armed": True,
                "device_confirmed": True,
            }
            assert calls == ["disarm_then_armed"]
        finally:
            answered_meanwhile.set()


def test_a_disarm_that_happened_is_not_answered_as_failed_when_the_link_then_fails(tmp_path):
    """The loop's process disarms, then stops answering (hung, or its link lost). Asked as two
    calls, the disarm and then whether it is armed, the second timed out and the operator was
    told 503 for a disarm that had happened; one call answers what it did."""
    address = LinkAddress(str(tmp_path / "loop.sock"), b"k" * 32)
    released = threading.Event()

    def answer(name: str) -> object:
        done = Disarmed(was_armed=True, device_confirmed=True)
        if name == "disarm":
            return done
        if name == "disarm_then_armed":
            return done, False
        released.wait(30)  # hung after the disarm
        return False

    api = ApiSettings(port=free_port(), token=TOKEN)
    with _stand_in_loop(address, answer):
        remote = RemoteDaemon(address, call_timeout_s=2)
        try:
            with _api_over(remote, api), httpx.Client(base_url=base_url(api), timeout=60) as http:
                disarmed = http.post(
                    "/control/disarm", headers={"Authorization": f"Bearer {TOKEN}"}
                )
            assert disarmed.status_code == 200, disarmed.text
            assert disarmed.json()["was_armed"] is True
        finally:
            released.set()


def test_an_accept_that_keeps_failing_is_logged_once_and_the_link_then_serves(
    daemon, monkeypatch, caplog
):
    """Out of file descriptors (EMFILE), every accept fails at once: the link logs it at most
    every 10 s and pauses between tries, rather than a warning per try in a loop that fills a
    CPU and the log; once descriptors are free it serves."""
    real_accept = Listener.accept
    failures = []

    def accept(self):
        if len(failures) < 5:
            failures.append(1)
            raise OSError(24, "Too many open files")
        return real_accept(self)

    monkeypatch.setattr(Listener, "accept", accept)
    with caplog.at_level(logging.WARNING, "corticast.control"), ControlLink(daemon) as link:
        assert RemoteDaemon(link.address).disarm("after") == Disarmed(
            was_armed=False, device_confirmed=False
        )
    assert len(failures) == 5
    logged = [r for r in caplog.records if "accepting a connection failed" in r.getMessage()]
    assert len(logged) == 1


def test_a_stop_does_not_wait_for_room_in_a_queue_that_no_accept_drains(daemon, monkeypatch):
    """Out of file descriptors, every accept fails, and the listener's queue (a backlog of 1)
    stays full of the control process's connections: the stop's own connection, made to wake
    the accept, waited for room in that queue for ever, and the loop's stop with it. Now it
    is given up at once (the failing accept sees the stop at its next try)."""

    def accept(self):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(Listener, "accept", accept)
    link = ControlLink(daemon).start()
    queued: list[socket.socket] = []
    stop = threading.Thread(target=link.stop)
    try:
        with contextlib.suppress(BlockingIOError):
            while len(queued) < 100:  # as the control process's connections fill it
                queued.append(socket.socket(socket.AF_UNIX))
                queued[-1].setblocking(False)
                queued[-1].connect(link.address.path)
        stop.start()
        stop.join(30)
        assert not stop.is_alive(), "the stop still waits for room in the listener's queue"
    finally:
        if stop.is_alive():  # the connection it waits with is refused, and the stop ends
            link._listener.close()
            stop.join(30)
        for waiting in queued:
            waiting.close()
    assert not link.running


@contextmanager
def _api_over(remote: RemoteDaemon, api: ApiSettings) -> Iterator[None]:
    """The HTTP API of ``remote`` served by a real uvicorn on a thread, as the control process
    serves it, until the block ends."""
    server = uvicorn.Server(uvicorn_config(create_app(remote, api), api))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the HTTP server")
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def _stand_in_loop(address: LinkAddress, answer: Callable[[str], object]) -> Iterator[None]:
    """A stand-in for the loop's process at ``address``: each connection, its key proven,
    served on a thread of its own, each call answered ``("ok", answer(name))``, until the
    block ends."""

    def serve(connection: Connection) -> None:
        with connection:
            while True:
                try:
                    name, _ = connection.recv()
                except EOFError:
                    return
                connection.send(("ok", answer(name)))

    with Listener(address.path, "AF_UNIX", authkey=address.authkey) as listener:

        def accept() -> None:
            while True:
                try:
                    connection = listener.accept()
                except OSError:
                    return
                threading.Thread(target=serve, args=(connection,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        yield


def test_an_address_s_repr_never_shows_its_key(tmp_path):
    """A traceback or log line that shows the link's address (its repr) showed the key that
    any local process proving it may call the daemon with."""
    key = b"s3cr3t-" * 5
    address = LinkAddress(str(tmp_path / "link"), key)
    assert str(tmp_path / "link") in repr(address)
    assert key.hex() not in repr(address) and "s3cr3t" not in repr(address)
