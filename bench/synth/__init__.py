"""Synthetic µECoG: travelling waves, seizures and neural-field activity with ground truth."""

from bench.synth._episode import Episode
from bench.synth.artefacts import Artefacts
from bench.synth.background import Background
from bench.synth.config import SynthConfig
from bench.synth.generator import generate_session
from bench.synth.neural_field import NeuralField
from bench.synth.plane_wave import PlaneWave
from bench.synth.radial_wave import RadialWave
from bench.synth.schedule import random_schedule
from bench.synth.seizure import Seizure
from bench.synth.spiral_wave import SpiralWave

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
    "generate_session",
    "random_schedule",
]
