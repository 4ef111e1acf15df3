import pytest
import torch

from models.convlstm.discriminator import EnergyDiscriminator

TINY = (4, 4, 2, 4, 4)


def _wave(frames: int) -> torch.Tensor:
    """A plane wave (1, T, 1, 18, 20): smooth, like the sequences the discriminator sees."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    y = torch.arange(18, dtype=torch.float32)[:, None]
    x = torch.arange(20, dtype=torch.float32)
    return 0.5 * torch.sin(0.5 * x + 0.2 * y - 0.8 * t)[None, :, None]


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("frames", [16, 32])
def test_paper_sizes_reconstruct_the_input_shape(depth, frames):
    torch.manual_seed(0)
    model = EnergyDiscriminator(depth)
    z = torch.randn(2, frames, 1, 18, 20)
    assert model(z).shape == z.shape
    assert model.energy(z).shape == (2,)


@pytest.mark.parametrize(("depth", "widths"), [(3, [32, 32, 4, 32, 32, 1]), (2, [32, 4, 32, 1])])
def test_default_feature_maps_follow_table_1(depth, widths):
    model = EnergyDiscriminator(depth)
    layers = [*model.encoder, *model.decoder]
    assert [layer.out_channels for layer in layers] == widths
    assert all(layer.kernel_size == (7, 7, 7) for layer in layers)
    assert all(layer.stride == (2, 2, 2) for layer in layers)
    assert len(model.norms) == len(widths) - 1  # BatchNorm everywhere but the last layer


@pytest.mark.parametrize("shape", [(7, 5, 9), (1, 1, 1), (33, 18, 20)])
def test_any_size_comes_back_exactly(shape):
    model = EnergyDiscriminator(3, TINY)
    z = torch.randn(2, shape[0], 1, *shape[1:])
    assert model(z).shape == z.shape


def test_energy_is_the_mean_squared_reconstruction_error():
    torch.manual_seed(0)
    model = EnergyDiscriminator(2, (4, 2, 4)).eval()
    z = torch.randn(3, 16, 1, 18, 20)
    with torch.no_grad():
        expected = ((model(z) - z) ** 2).mean(dim=(1, 2, 3, 4))
        torch.testing.assert_close(model.energy(z), expected)


def test_energy_passes_gradient_to_the_sequence():
    """The generator's adversarial loss reaches it through the discriminator's input."""
    model = EnergyDiscriminator(2, (4, 2, 4))
    z = torch.randn(2, 16, 1, 18, 20, requires_grad=True)
    model.energy(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_training_lowers_the_energy_of_what_it_learned():
    torch.manual_seed(0)
    model = EnergyDiscriminator(3, TINY)
    sequence = _wave(16)
    noise = torch.randn_like(sequence) * sequence.std()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model.energy(sequence).mean().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        learned, other = model.energy(sequence).item(), model.energy(noise).item()
    assert learned < 0.25 * other


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 4}, r"'depth' must be an int in \[2, 3\], got 4"),
        ({"depth": 2, "channels": (32, 32, 4, 32, 32)}, "'channels' must hold 3 widths"),
        ({"channels": (4, 4, 0, 4, 4)}, "'channels\\[2\\]' must be an int >= 1, got 0"),
        ({"negative_slope": -0.1}, "'negative_slope' must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyDiscriminator(**kwargs)


def test_wrong_input_shape_is_rejected():
    model = EnergyDiscriminator(2, (4, 2, 4))
    with pytest.raises(ValueError, match=r"'z' must have shape \(B, T, 1, H, W\), got \(16, 1"):
        model(torch.zeros(16, 1, 18, 20))
    with pytest.raises(ValueError, match=r"got \(1, 16, 2, 18, 20\)"):
        model.energy(torch.zeros(1, 16, 2, 18, 20))
