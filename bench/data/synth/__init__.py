"""Synthetic µECoG: travelling waves, seizures and neural-field activity with ground truth."""

from bench.data.synth._episode import Episode
from bench.data.synth.artefacts import Artefacts
from bench.data.synth.background import Background
from bench.data.synth.config import SynthConfig
from bench.data.synth.generator import generate_session
from bench.data.synth.mixture import generate_mixture_session
from bench.data.synth.neural_field import NeuralField
from bench.data.synth.plane_wave import PlaneWave
from bench.data.synth.radial_wave import RadialWave
from bench.data.synth.schedule import random_schedule
from bench.data.synth.seizure import Seizure
from bench.data.synth.spiral_wave import SpiralWave

__all__ = [
    "Artefacts",
    "Background",
    "Episode",
    "NeuralField",
    "PlaneWave",
    "RadialWave",
    "Seizure",
    "SpiralWave",
    "SynthConfig",
    "generate_mixture_session",
    "generate_session",
    "random_schedule",
]
