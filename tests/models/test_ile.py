import json

import numpy as np
import onnx
import pytest
import torch

from models.export import PARITY_TOLERANCE, export_onnx, run_onnx
from models.ile.config import ILEConfig
from models.ile.dynamics import eigenvalues, transition_matrix
from models.ile.flow import Flow, squeeze, unsqueeze
from models.ile.training import ILETraining
from models.objective import Batch, regular_times
from models.registry import build_model, make_config
from models.training import LOG_FILE, RunConfig, train
from tests.models._metadata import short_metadata

TINY = {"coupling_layers": 2, "hidden": 8, "latent": 8}
SHORT = {**TINY, "past_frames": 4, "future_frames": 4}


def _perturbed(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Random weights everywhere, so no coupling is the identity of its zero initialisation."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return module


def test_squeezes_give_the_decided_shapes_and_invert():
    x = torch.randn(2, 1, 18, 20)
    once = squeeze(x, (2, 2))
    twice = squeeze(once, (3, 2))
    assert once.shape == (2, 4, 9, 10) and twice.shape == (2, 24, 3, 5)
    assert torch.equal(unsqueeze(unsqueeze(twice, (3, 2)), (2, 2)), x)


def test_flow_is_invertible():
    torch.manual_seed(0)
    flow = _perturbed(Flow(ILEConfig(**TINY)))
    frames = torch.randn(6, 1, 18, 20)
    embeddings, _ = flow(frames)
    assert embeddings.shape == (6, 360)
    torch.testing.assert_close(flow.inverse(embeddings), frames, rtol=0, atol=1e-4)


def test_log_determinant_matches_the_brute_force_jacobian():
    torch.manual_seed(1)
    flow = _perturbed(Flow(ILEConfig(**TINY, grid_shape=(6, 4))), scale=0.3).double()
    frame = torch.randn(1, 1, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        _, log_det = flow(frame)
    jacobian = torch.autograd.functional.jacobian(lambda x: flow(x)[0], frame).reshape(24, 24)
    _, expected = torch.linalg.slogdet(jacobian)
    assert abs(float(log_det) - float(expected)) < 1e-8
    assert abs(float(log_det)) > 0.1  # the perturbation made the scales matter


def _spectral_radius(theta_a: torch.Tensor, theta_b: torch.Tensor) -> float:
    matrix = transition_matrix(theta_a.detach(), theta_b.detach())
    return float(torch.linalg.eigvals(matrix).abs().max())


def test_eigenvalues_stay_in_the_unit_circle_for_extreme_parameters():
    extremes = torch.tensor([0.0, -0.0, 1e-20, 1e-14, 0.5, 1.0, -1.0, 1e6, -1e30, 1e-8])
    theta_a, theta_b = torch.meshgrid(extremes, extremes, indexing="ij")
    a, b = eigenvalues(theta_a.flatten(), theta_b.flatten())
    assert a.dtype == torch.float64
    assert float((a.square() + b.square()).max()) <= 1.0
    assert float(a.max()) == 1 - 1e-14 and float(a.float().max()) == 1.0  # alpha = 1 in float32
    assert _spectral_radius(theta_a.flatten(), theta_b.flatten()) <= 1.0 + 1e-12


def test_eigenvalues_stay_in_the_unit_circle_while_training():
    torch.manual_seed(2)
    model = build_model("ile", SHORT)
    training = ILETraining(model, learning_rate=0.5)  # large steps push the parameters hard
    for step in range(4):
        batch = Batch(
            torch.randn(2, 4, 1, 18, 20), torch.randn(2, 4, 1, 18, 20), regular_times(2, 4)
        )
        logs = training.step(batch, step)
        assert np.isfinite(logs["loss"])
        assert _spectral_radius(model.system.theta_a, model.system.theta_b) <= 1.0 + 1e-12


def test_operators_are_the_pseudo_inverse_and_powers_of_a():
    torch.manual_seed(3)
    model = build_model("ile", SHORT)
    a_matrix = transition_matrix(model.system.theta_a, model.system.theta_b)
    c = model.system.c.double()
    rows = [c @ torch.linalg.matrix_power(a_matrix, t) for t in range(8)]
    fit, future = model.operators()
    torch.testing.assert_close(
        fit.double(), torch.linalg.pinv(torch.cat(rows[:4])), atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(future.double(), torch.cat(rows[4:]), atol=1e-6, rtol=1e-5)


def test_shapes_and_eval_mode_uses_the_same_operators():
    torch.manual_seed(4)
    model = _perturbed(build_model("ile", TINY))
    past = torch.randn(2, 16, 1, 18, 20)
    with torch.no_grad():
        live = model.train().predict(past)
        frozen = model.eval().predict(past)
    assert live.shape == (2, 16, 1, 18, 20)
    with torch.no_grad():
        assert torch.isfinite(build_model("ile", TINY).predict(torch.zeros(1, 16, 1, 18, 20))).all()
    torch.testing.assert_close(frozen, live)  # equal operators, other memory layouts

    reloaded = build_model("ile", TINY).eval()
    reloaded.load_state_dict(model.state_dict())  # refreshes the operators of an eval model
    with torch.no_grad():
        torch.testing.assert_close(reloaded.predict(past), frozen, rtol=0, atol=0)


def test_the_future_never_reaches_the_prediction_and_every_past_frame_does():
    torch.manual_seed(5)
    model = _perturbed(build_model("ile", SHORT))
    past = torch.randn(2, 4, 1, 18, 20, requires_grad=True)
    future = torch.randn(2, 4, 1, 18, 20)
    predicted = model(past, future).predicted
    torch.testing.assert_close(model(past, torch.randn_like(future)).predicted, predicted)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(predicted), model.predict(past))
    model.predict(past)[0, 0].sum().backward()
    reached = past.grad.abs().flatten(2).sum(-1)
    assert torch.all(reached[0] > 0) and torch.all(reached[1] == 0)  # no mixing across windows


def test_loss_falls_over_a_few_dozen_steps(tmp_path, train_set):
    """The negative log-likelihood per scored value; batches of 2 differ a lot, so means of
    20 steps are compared."""
    config = RunConfig(family="ile", model=TINY, steps=120, batch_size=2, log_every=1)
    train(config, train_set, tmp_path, progress=False)
    logs = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    first = sum(entry["loss"] for entry in logs[:20]) / 20
    last = sum(entry["loss"] for entry in logs[-20:]) / 20
    assert last < first - 0.2, f"loss {first:.3f} -> {last:.3f}"
    assert logs[0]["loss"] == pytest.approx(logs[0]["prediction"] - logs[0]["log_det"], rel=1e-5)


def test_export_matches_pytorch(tmp_path):
    torch.manual_seed(6)
    model = _perturbed(build_model("ile", SHORT))
    path = tmp_path / "ile.onnx"
    assert export_onnx(model, path, short_metadata("ile", SHORT), optimize=False) < PARITY_TOLERANCE

    past = np.random.default_rng(1).uniform(-1, 1, (1, 4, 1, 18, 20)).astype(np.float32)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(past)).numpy()
    np.testing.assert_allclose(run_onnx(path, past), expected, atol=PARITY_TOLERANCE)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"Loop", "Scan", "If"}


def test_a_residual_export_matches_pytorch(tmp_path):
    torch.manual_seed(7)
    config = {**SHORT, "residual": True}
    model = _perturbed(build_model("ile", config))
    path = tmp_path / "ile-residual.onnx"
    assert export_onnx(model, path, short_metadata("ile", config), optimize=False) < (
        PARITY_TOLERANCE
    )
    past = np.random.default_rng(2).uniform(-1, 1, (1, 4, 1, 18, 20)).astype(np.float32)
    with torch.no_grad():
        expected = model.eval().predict(torch.from_numpy(past)).numpy()
    np.testing.assert_allclose(run_onnx(path, past), expected, atol=PARITY_TOLERANCE)


def _still_system(model: torch.nn.Module) -> torch.nn.Module:
    """A of the identity (every block ``a = 1 - eps``, ``b = 0``): x_t never changes."""
    with torch.no_grad():
        model.system.theta_a.zero_()
        model.system.theta_b.fill_(1.0)
    return model


def test_a_residual_ile_whose_system_stands_still_predicts_the_last_frame():
    """With A = I the system predicts no departure, so a residual ILE serves the last frame
    through the exact inverse flow, while the absolute one serves its rank-8 fit of the past."""
    past = torch.from_numpy(
        np.random.default_rng(3).uniform(-1, 1, (2, 4, 1, 18, 20)).astype(np.float32)
    )
    last = past[:, -1:].expand(-1, 4, -1, -1, -1)
    errors = {}
    for residual in (False, True):
        torch.manual_seed(8)
        model = _still_system(_perturbed(build_model("ile", {**SHORT, "residual": residual})))
        with torch.no_grad():
            errors[residual] = float((model.eval().predict(past) - last).abs().max())
    assert errors[True] < 1e-4, errors
    assert errors[False] > 0.1, errors


def test_the_residual_prediction_is_what_the_likelihood_scores():
    """Training scores the residual mean: ``forward``'s predicted embeddings decode to
    ``predict``'s frames, so the likelihood fits what is served."""
    torch.manual_seed(9)
    model = _perturbed(build_model("ile", {**SHORT, "residual": True})).eval()
    frames = torch.from_numpy(
        np.random.default_rng(4).uniform(-1, 1, (2, 8, 1, 18, 20)).astype(np.float32)
    )
    with torch.no_grad():
        output = model(frames[:, :4], frames[:, 4:])
        torch.testing.assert_close(
            model.decode(output.predicted), model.predict(frames[:, :4]), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"coupling_layers": 0}, "'coupling_layers' must be >= 1, got 0"),
        ({"hidden": 0}, "'hidden' must be >= 1"),
        ({"future_frames": 0}, "'future_frames' must be >= 1"),
        ({"latent": 7}, r"'latent' must be even, >= 2 and <= past_frames \* pixels \(5760\)"),
        ({"latent": 5762}, "'latent' must be even"),
        ({"grid_shape": (18, 18)}, r"'grid_shape' must be \(rows, cols\) with rows divisible by 6"),
        ({"grid_shape": (18,)}, "'grid_shape' must be"),
    ],
)
def test_bad_config_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        ILEConfig(**values)


def test_unknown_config_key_and_wrong_input_are_refused():
    with pytest.raises(ValueError, match=r"unknown ile config key\(s\) \['latnt'\]"):
        make_config("ile", {"latnt": 8})
    model = build_model("ile", TINY)
    with pytest.raises(
        ValueError, match=r"'past' must have shape \(batch, 16, 1, 18, 20\), got \(1, 16, 18, 20\)"
    ):
        model.predict(torch.zeros(1, 16, 18, 20))
    past = torch.zeros(2, 16, 1, 18, 20)
    wrong_length = r"'future' must have shape \(batch, 16, 1, 18, 20\), got \(2, 8, 1, 18, 20\)"
    with pytest.raises(ValueError, match=wrong_length):
        model(past, torch.zeros(2, 8, 1, 18, 20))
    with pytest.raises(ValueError, match=r"'future' must have the batch of 'past' \(2\), got 3"):
        model(past, torch.zeros(3, 16, 1, 18, 20))
