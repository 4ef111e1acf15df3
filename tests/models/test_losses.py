import pytest
import torch

from models.convlstm.losses import (
    GRAD_CLIP_NORM,
    LEARNING_RATE,
    AdversarialSchedule,
    discriminator_loss,
    generator_loss,
)


def _frames(*values: float) -> torch.Tensor:
    """(B=1, T, 1, 1, 2) frames from pairs of pixel values, one pair per frame."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1, 2)


def test_generator_loss_parts_on_hand_computed_inputs():
    # Two sequences of two 1x2 frames. Reconstruction errors per pixel: first sequence
    # (1, 1), (1, 1) -> frame means 1 and 1 -> 2; second sequence (2, 0), (0, 0) -> frame
    # means 2 and 0 -> 2. Batch mean 2.
    past = torch.cat([_frames(1, 1, 1, 1), _frames(2, 0, 0, 0)])
    reconstruction = torch.zeros_like(past)
    # Prediction errors: first sequence (0, 0), (0, 0) -> 0; second (3, 1), (1, 1) -> frame
    # means 5 and 1 -> 6. Batch mean 3.
    future = torch.cat([_frames(0, 0, 0, 0), _frames(3, 1, 1, 1)])
    prediction = torch.zeros_like(future)
    fake_energy = torch.tensor([0.5, 1.5])

    total, parts = generator_loss(reconstruction, past, prediction, future, fake_energy)

    assert parts["rec"].item() == pytest.approx(2.0)
    assert parts["pred"].item() == pytest.approx(3.0)
    assert parts["adv"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(2.0 + 3.0 + 0.1 * 1.0)

    total, _ = generator_loss(
        reconstruction,
        past,
        prediction,
        future,
        fake_energy,
        rec_weight=0.5,
        pred_weight=2.0,
        adv_weight=0.0,
    )
    assert total.item() == pytest.approx(0.5 * 2.0 + 2.0 * 3.0)


def test_generator_loss_reaches_prediction_and_energy_but_parts_are_detached():
    past = torch.ones(2, 3, 1, 2, 2)
    prediction = torch.zeros(2, 3, 1, 2, 2, requires_grad=True)
    fake_energy = torch.ones(2, requires_grad=True)
    total, parts = generator_loss(past, past, prediction, past, fake_energy)
    total.backward()
    assert prediction.grad.abs().sum() > 0
    torch.testing.assert_close(fake_energy.grad, torch.full((2,), 0.1 / 2))
    assert not any(part.requires_grad for part in parts.values())


def test_generator_loss_rejects_mismatched_shapes_and_negative_weights():
    frames = torch.zeros(1, 16, 1, 18, 20)
    with pytest.raises(ValueError, match="'prediction' and 'future' must have the same"):
        generator_loss(frames, frames, frames, frames[:, :8], torch.zeros(1))
    with pytest.raises(ValueError, match="'reconstruction' and 'past' must have the same"):
        generator_loss(frames[0], frames[0], frames, frames, torch.zeros(1))
    with pytest.raises(ValueError, match="'adv_weight' must be a finite number >= 0, got -1"):
        generator_loss(frames, frames, frames, frames, torch.zeros(1), adv_weight=-1.0)


def test_discriminator_hinge_loss_on_hand_computed_inputs():
    real = torch.tensor([0.1, 0.3])
    fake = torch.tensor([0.5, 2.0], requires_grad=True)
    total, parts = discriminator_loss(real, fake, margin=1.0)
    # real mean 0.2; hinge max(0, 1 - 0.5) = 0.5 and max(0, 1 - 2) = 0 -> mean 0.25
    assert parts["real"].item() == pytest.approx(0.2)
    assert parts["fake"].item() == pytest.approx(1.25)
    assert parts["hinge"].item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(0.45)
    total.backward()
    # Only fakes below the margin are pushed up; one above it gets no gradient.
    torch.testing.assert_close(fake.grad, torch.tensor([-0.5, 0.0]))


@pytest.mark.parametrize("margin", [0.0, -1.0, float("nan")])
def test_discriminator_loss_needs_a_positive_margin(margin):
    with pytest.raises(ValueError, match="'margin' must be a finite number > 0"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), margin=margin)


def test_discriminator_updates_every_second_iteration():
    schedule = AdversarialSchedule(total_steps=100)
    assert [schedule.updates_discriminator(k) for k in range(6)] == [True, False] * 3
    every_third = AdversarialSchedule(total_steps=100, discriminator_every=3)
    assert [every_third.updates_discriminator(k) for k in range(6)] == [True, False, False] * 2


@pytest.mark.parametrize(("total_steps", "first_half"), [(10, 5), (7, 3)])
def test_learning_rate_drops_tenfold_at_half_of_training(total_steps, first_half):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=LEARNING_RATE)
    scheduler = AdversarialSchedule(total_steps=total_steps).lr_scheduler(optimizer)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        parameter.grad = torch.ones(1)
        optimizer.step()
        scheduler.step()
    expected = [1e-3] * first_half + [1e-4] * (total_steps - first_half)
    assert rates == pytest.approx(expected)


def test_paper_constants():
    assert LEARNING_RATE == 1e-3
    assert GRAD_CLIP_NORM == 1e-3


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'total_steps' must be an int >= 2, got 1"):
        AdversarialSchedule(total_steps=1)
    with pytest.raises(ValueError, match="'discriminator_every' must be an int >= 1, got 0"):
        AdversarialSchedule(total_steps=10, discriminator_every=0)
    with pytest.raises(ValueError, match="'step' must be an int >= 0, got -1"):
        AdversarialSchedule(total_steps=10).updates_discriminator(-1)
