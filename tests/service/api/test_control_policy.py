"""``PUT /control/policy`` runs the config loader's validation: the same refusals, the same
words, for a policy sent to the API and one written in the config file.

One daemon for the module (no rig or device: a policy change needs neither), served by uvicorn,
with a charge-density limit below the clinical one so that the interlocks' own limit is tested.
"""

import json
import uuid

import httpx
import pytest

from service.api.served import ServedDaemon
from service.config import ConfigError, load_settings
from tests.data.tiny_model import copy_tiny_model
from tests.service._loop_harness import AUTH, loop_settings

pytestmark = pytest.mark.slow
INTERLOCKS = {"charge_density_limit_uc_cm2": 20.0}
"""Defaults otherwise: 1-100 µA, 40-500 µs, 1-200 Hz, 10-1000 ms, 3e-4 cm², 8 channels."""
TWENTY = [[row, col] for row in range(2) for col in range(10)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    _, window, step = copy_tiny_model(root / "model")
    settings = loop_settings(
        root, window, step, f"corticast-test-{uuid.uuid4().hex[:12]}",
        bridge={"dry_run": True}, interlocks=INTERLOCKS,
    )  # fmt: skip
    with ServedDaemon(settings) as served:
        yield served


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as client:
        yield client


REFUSED = [
    # (policy body, the field the refusal names); each passes the policy's own checks.
    (
        {"stimulation": {"amplitude_ua": 1000, "electrode_area_cm2": 0.5}},
        "stimulation.amplitude_ua",
    ),
    ({"stimulation": {"amplitude_ua": 5, "phase_width_us": 1000}}, "stimulation.phase_width_us"),
    ({"stimulation": {"frequency_hz": 500}}, "stimulation.frequency_hz"),
    ({"stimulation": {"train_duration_ms": 5}}, "stimulation.train_duration_ms"),
    ({"stimulation": {"electrode_area_cm2": 0.5}}, "stimulation.electrode_area_cm2"),
    (
        {"stimulation": {"electrode_area_cm2": 3.4028235677973366e38}},
        "stimulation.electrode_area_cm2",
    ),
    ({"stimulation": {"amplitude_ua": 69}}, "stimulation"),  # 23 µC/cm² > the limit of 20
    ({"target_electrodes": TWENTY}, "target_electrodes"),
    ({"target_electrodes": [[3, 4]], "stimulation": {"channels": TWENTY}}, "stimulation.channels"),
    ({"target_electrodes": [[0, 20]]}, "target_electrodes.0"),  # off the 18x20 grid
    ({"target_electrodes": [[0, False]]}, "target_electrodes.0.1"),  # a bool is not an int
    ({"min_pgd": True}, "min_pgd"),
]


@pytest.mark.parametrize(("body", "field"), REFUSED, ids=[f for _, f in REFUSED])
def test_the_api_and_the_config_file_refuse_the_same_policy_in_the_same_words(
    served, http, tmp_path, body, field
):
    before = http.get("/status").json()["policy"]

    answer = http.put("/control/policy", json=body)

    assert answer.status_code == 422, answer.text
    problems = {p["where"]: p["problem"] for p in answer.json()["detail"]}
    assert f"body.{field}" in problems, problems
    assert http.get("/status").json()["policy"] == before

    config = tmp_path / "corticast.toml"
    config.write_text(_toml({"policy": body, "interlocks": INTERLOCKS}), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert f"policy.{field}: {problems[f'body.{field}']}" in str(refused.value)


def test_the_reported_overreach_names_every_field_at_once(http):
    answer = http.put(
        "/control/policy",
        json={
            "target_electrodes": TWENTY,
            "stimulation": {"amplitude_ua": 1000, "phase_width_us": 1000, "frequency_hz": 500,
                            "electrode_area_cm2": 0.5},
        },
    )  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert {p["where"] for p in answer.json()["detail"]} >= {
        "body.target_electrodes",
        "body.stimulation.amplitude_ua",
        "body.stimulation.phase_width_us",
        "body.stimulation.frequency_hz",
        "body.stimulation.electrode_area_cm2",
    }
    problems = {p["where"]: p["problem"] for p in answer.json()["detail"]}
    assert problems["body.stimulation.amplitude_ua"] == (
        "amplitude must be in [1, 100] µA, got 1000: the bridge's 'amplitude' interlock "
        "([interlocks]) would block every request"
    )


def test_a_valid_policy_applies_and_status_shows_it(http):
    body = {
        "min_pgd": 0.7,
        "target_electrodes": [[3, 4], [3, 5]],
        "stimulation": {"amplitude_ua": 50, "phase_width_us": 100, "frequency_hz": 130},
    }
    answer = http.put("/control/policy", json=body)
    assert answer.status_code == 200, answer.text
    policy = http.get("/status").json()["policy"]
    assert policy["min_pgd"] == 0.7 and policy["target_electrodes"] == [[3, 4], [3, 5]]
    assert policy["stimulation"]["amplitude_ua"] == 50
    assert policy["stimulation"]["frequency_hz"] == 130


def _toml(sections: dict) -> str:
    """TOML of ``{section: {key: value or {key: value}}}`` (JSON's scalars and arrays are
    TOML's)."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if k not in tables]
        for key, table in tables.items():
            lines.append(f"[{name}.{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
