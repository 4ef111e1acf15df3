import pytest
import torch

from models.convlstm.blocks import ConvLSTMCell, downsample_time, upsample_time
from models.convlstm.model import ConvLSTMConfig
from models.registry import build_model, make_config, model_names

TINY = {"hidden": (3, 4), "kernel_size": 3}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "width", "expected", "coarse"),
    [
        ("convlstm", 64, 4_123_266, None),
        ("mr_lstm", 64, 8_265_732, 4_123_266),
        ("mr_layer_lstm", 64, 4_123_524, None),
        ("convlstm", 128, 15_619_330, None),
        ("mr_lstm", 128, 31_277_060, 15_619_330),
        ("mr_layer_lstm", 128, 15_619_844, None),
    ],
)
def test_parameter_counts_match_table_1(name, width, expected, coarse):
    model = build_model(name, {"hidden": (width, width)})
    assert _count(model) == expected
    if coarse is not None:
        assert _count(model.coarse) == coarse


@pytest.mark.parametrize("name", ["convlstm", "mr_lstm", "mr_layer_lstm"])
def test_shapes_and_range(name):
    torch.manual_seed(0)
    model = build_model(name, TINY)
    past = torch.randn(2, 16, 1, 18, 20)
    output = model(past)
    assert output.reconstruction.shape == output.prediction.shape == (2, 16, 1, 18, 20)
    assert output.prediction.abs().max() < 1  # tanh heads
    if name == "mr_lstm":
        assert (
            output.coarse.prediction.shape
            == output.coarse.reconstruction.shape
            == (
                2,
                8,
                1,
                18,
                20,
            )
        )
    torch.testing.assert_close(model.predict(past), output.prediction)


@pytest.mark.parametrize("name", ["convlstm", "mr_lstm", "mr_layer_lstm"])
@pytest.mark.parametrize("horizon", [2, 6])
def test_later_steps_never_influence_earlier_predictions(name, horizon):
    """The same weights predicting fewer steps give the same first steps."""
    torch.manual_seed(1)
    full = build_model(name, TINY)
    short = build_model(name, {**TINY, "future_frames": horizon})
    short.load_state_dict(full.state_dict())
    past = torch.randn(1, 16, 1, 18, 20)
    with torch.no_grad():
        torch.testing.assert_close(short.predict(past), full.predict(past)[:, :horizon])


@pytest.mark.parametrize("name", ["convlstm", "mr_lstm", "mr_layer_lstm"])
def test_every_past_frame_reaches_the_prediction(name):
    torch.manual_seed(2)
    model = build_model(name, TINY)
    past = torch.randn(1, 16, 1, 18, 20, requires_grad=True)
    model.predict(past)[:, 0].sum().backward()
    reached = past.grad.abs().flatten(2).sum(-1).squeeze()
    assert torch.all(reached > 0), f"past frames without influence: {torch.nonzero(reached == 0)}"


def test_upper_layer_of_mr_layer_model_holds_on_odd_steps():
    cell_calls = []
    model = build_model("mr_layer_lstm", TINY)
    model.predictor.upper.register_forward_hook(lambda *_: cell_calls.append("upper"))
    model.predictor.lower.register_forward_hook(lambda *_: cell_calls.append("lower"))
    with torch.no_grad():
        model.predict(torch.randn(1, 16, 1, 18, 20))
    assert cell_calls.count("lower") == 16
    assert cell_calls.count("upper") == 8  # future times 18, 20, ..., 32


def test_downsample_is_eq_4_and_upsample_interpolates_odd_steps():
    frames = torch.arange(1.0, 9.0).view(1, 8, 1, 1, 1)  # x_1..x_8 = 1..8
    coarse = downsample_time(frames)
    torch.testing.assert_close(coarse.flatten(), torch.tensor([1.5, 3.5, 5.5, 7.5]))
    fine = upsample_time(coarse, before=torch.tensor(-0.5).view(1, 1, 1, 1))
    torch.testing.assert_close(
        fine.flatten(), torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
    )


def test_cell_starts_with_zero_peepholes_and_an_open_forget_gate():
    cell = ConvLSTMCell(2, 3, 3, (4, 5))
    assert torch.count_nonzero(cell.peephole) == 0
    assert torch.all(cell.gates.bias[3:6] == 1.0)


def test_registry_names_and_errors():
    assert {"convlstm", "mr_layer_lstm", "mr_lstm"} <= set(model_names())
    assert model_names() == sorted(model_names())
    with pytest.raises(ValueError, match=r"unknown model 'lstm'; valid models are \['convlstm'"):
        build_model("lstm")
    with pytest.raises(ValueError, match=r"unknown convlstm config key\(s\) \['hiden'\]"):
        make_config("convlstm", {"hiden": (8, 8)})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hidden": (8,)}, "'hidden' must be two positive widths"),
        ({"kernel_size": 4}, "'kernel_size' must be odd"),
        ({"future_frames": 0}, "'future_frames' must be >= 1"),
    ],
)
def test_bad_config_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        ConvLSTMConfig(**values)


def test_multi_resolution_needs_even_windows():
    with pytest.raises(ValueError, match="'future_frames' must be even for two temporal scales"):
        build_model("mr_lstm", {"future_frames": 15})


def test_wrong_input_shape_is_refused():
    model = build_model("convlstm", TINY)
    with pytest.raises(
        ValueError, match=r"'past' must have shape \(batch, 16, 1, 18, 20\), got \(1, 16, 18, 20\)"
    ):
        model.predict(torch.zeros(1, 16, 18, 20))


@pytest.mark.parametrize("name", ["convlstm", "mr_layer_lstm"])
def test_streaming_one_frame_at_a_time_equals_the_window_prediction(name):
    torch.manual_seed(3)
    model = build_model(name, TINY).eval()
    past = torch.randn(1, 16, 1, 18, 20)
    with torch.no_grad():
        states = model.zero_stream_state(past[:, 0])
        for t in range(16):
            streamed, states = model.stream_step(past[:, t], states, (t + 1) % 2 == 0)
        torch.testing.assert_close(streamed, model.predict(past))


def test_mr_layer_streaming_with_the_other_phase_differs():
    """The phase flag is live: feeding the window with the odd phase changes the prediction."""
    torch.manual_seed(4)
    model = build_model("mr_layer_lstm", TINY).eval()
    past = torch.randn(1, 16, 1, 18, 20)
    with torch.no_grad():
        states = model.zero_stream_state(past[:, 0])
        for t in range(16):
            streamed, states = model.stream_step(past[:, t], states, t % 2 == 0)
        assert not torch.allclose(streamed, model.predict(past))


def test_multi_resolution_lstm_declares_it_cannot_stream():
    assert build_model("convlstm", TINY).streaming
    assert not build_model("mr_lstm", TINY).streaming


def test_the_exported_gate_convolution_is_the_one_pytorch_runs():
    """Export convolves x and the hidden state apart (``ConvLSTMCell._split_gate_conv``);
    PyTorch convolves their concatenation: the same gates."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, 3, (4, 5))
    with torch.no_grad():
        cell.peephole_offset.normal_()
    x, hidden = torch.randn(1, 2, 4, 5), torch.randn(1, 3, 4, 5)
    joined = torch.cat([x, hidden], dim=1)
    expected = torch.nn.functional.conv2d(joined, cell.gates.weight, cell._gate_bias(), padding=1)
    torch.testing.assert_close(cell._split_gate_conv(x, hidden), expected)
