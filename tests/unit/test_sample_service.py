"""The demo's sample service (``demo/sample_service.py``): identity, control endpoints, exit."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.sample import SampleService, call, call_json

IDENTITY = {"service": "api", "version": "v1", "instance": "api-v1-7"}


@pytest.fixture
def sample() -> Iterator[SampleService]:
    with SampleService("--name", "api", "--version", "v1", "--instance", "api-v1-7") as service:
        yield service


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_every_request_names_service_version_and_instance(
    sample: SampleService, method: str
) -> None:
    status, body = call_json(sample.url("/any/path?x=1"), method)
    assert status == 200
    assert body == IDENTITY


def test_head_has_the_headers_but_no_body(sample: SampleService) -> None:
    status, body, headers = call(sample.url("/"), "HEAD")
    assert status == 200
    assert body == ""
    assert headers["x-instance"] == "api-v1-7"


def test_fail_rate_one_fails_every_request_but_not_control_or_health(sample: SampleService) -> None:
    assert call_json(sample.url("/control/fail?rate=1"), "POST")[0] == 200
    for _ in range(5):
        status, body = call_json(sample.url("/"))
        assert status == 503
        assert body["instance"] == "api-v1-7"
    assert call(sample.url("/health"))[0] == 200
    status, state = call_json(sample.url("/control"))
    assert status == 200
    assert state["fail_rate"] == 1.0
    assert (state["requests"], state["failed"]) == (5, 5)


def test_fail_rate_is_the_fraction_of_requests_failed(sample: SampleService) -> None:
    call(sample.url("/control/fail?rate=0.5"), "POST")
    assert [call(sample.url("/"))[0] for _ in range(6)] == [200, 503] * 3
    call(sample.url("/control/fail?rate=0.25"), "POST")
    assert [call(sample.url("/"))[0] for _ in range(8)].count(503) == 2


def test_slow_delays_requests_but_not_control(sample: SampleService) -> None:
    call(sample.url("/control/slow?ms=1000"), "POST")
    started = time.monotonic()
    assert call(sample.url("/"))[0] == 200
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    assert call(sample.url("/control"))[0] == 200
    assert call(sample.url("/health"))[0] == 200
    assert time.monotonic() - started < 0.9


def test_health_fails_on_demand(sample: SampleService) -> None:
    status, body = call_json(sample.url("/health"))
    assert (status, body["health"]) == (200, "passing")
    assert call(sample.url("/control/health?status=fail"), "POST")[0] == 200
    status, body = call_json(sample.url("/health"))
    assert (status, body["health"]) == (503, "critical")
    assert call(sample.url("/"))[0] == 200  # traffic itself is unaffected
    call(sample.url("/control/health?status=pass"), "POST")
    assert call(sample.url("/health"))[0] == 200


def test_reset_undoes_everything(sample: SampleService) -> None:
    for control in ("/control/fail?rate=1", "/control/slow?ms=200", "/control/health?status=fail"):
        assert call(sample.url(control), "POST")[0] == 200
    status, state = call_json(sample.url("/control/reset"), "POST")
    assert status == 200
    assert state == {
        **IDENTITY,
        "fail_rate": 0.0,
        "slow_ms": 0,
        "health": "passing",
        "requests": 0,
        "failed": 0,
    }
    assert call(sample.url("/"))[0] == 200
    assert call(sample.url("/health"))[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/control/fail?rate=2", 400),
        ("POST", "/control/fail?rate=half", 400),
        ("POST", "/control/fail", 400),
        ("POST", "/control/slow?ms=-1", 400),
        ("POST", "/control/health?status=maybe", 400),
        ("POST", "/control/explode", 404),
        ("GET", "/control/fail?rate=1", 405),
    ],
)
def test_bad_control_requests_are_refused_and_change_nothing(
    sample: SampleService, method: str, path: str, status: int
) -> None:
    answer, body = call_json(sample.url(path), method)
    assert answer == status
    assert body["error"]
    state = call_json(sample.url("/control"))[1]
    assert (state["fail_rate"], state["slow_ms"], state["health"]) == (0.0, 0, "passing")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_quiet_and_exits_zero_on_a_stop_signal(sample: SampleService, signum: int) -> None:
    for _ in range(3):
        call(sample.url("/"))
    code, out, err = sample.stop(signum)
    assert code == 0
    assert out == ""  # nothing after the `listening PORT` line
    assert err == ""  # no line per request


def test_a_taken_port_is_a_clear_error(sample: SampleService) -> None:
    other = SampleService("--name", "api", "--version", "v1", "--port", str(sample.port))
    with pytest.raises(RuntimeError):
        other.start(timeout=10)
    assert other.process is not None and other.process.stderr is not None
    assert other.process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{sample.port}" in other.process.stderr.read()
