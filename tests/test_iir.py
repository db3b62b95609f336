"""Biquad design and block-at-a-time cascades: the same filters scipy designs and runs, without scipy on the device."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import signal  # type: ignore[import-untyped]

from firmware.dsp.iir import Cascade, butterworth_highpass, notch

RATES = [8000, 16000]


def product(sections: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The whole cascade as one numerator and one denominator polynomial."""
    b, a = np.ones(1), np.ones(1)
    for row in sections:
        b, a = np.polymul(b, row[:3]), np.polymul(a, row[3:])
    return b, a


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize(("order", "cutoff"), [(4, 120.0), (4, 60.0), (2, 300.0), (6, 200.0)])
def test_the_butterworth_high_pass_is_the_one_scipy_designs(rate: int, order: int, cutoff: float) -> None:
    ours = butterworth_highpass(order, cutoff, rate)
    theirs = signal.butter(order, cutoff, btype="highpass", fs=rate, output="sos")
    # scipy puts all the gain in its first section; the poles of each section are the same.
    assert np.abs(ours[:, 3:] - theirs[:, 3:]).max() < 1e-9
    b, a = product(ours)
    b_ref, a_ref = signal.butter(order, cutoff, btype="highpass", fs=rate)
    assert np.abs(b - b_ref).max() < 1e-9
    assert np.abs(a - a_ref).max() < 1e-9


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("freq", [50.0, 60.0, 250.0, 300.0, 1000.0])
@pytest.mark.parametrize("q", [1.0, 10.0, 100.0])
def test_the_notch_is_the_one_scipy_designs(rate: int, freq: float, q: float) -> None:
    b, a = signal.iirnotch(freq, q, fs=rate)
    assert np.abs(notch(freq, q, rate) - np.concatenate((b, a))).max() < 1e-12


def test_a_bad_butterworth_order_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"^a Butterworth high-pass here has an even order of 2 or more, not 3$"):
        butterworth_highpass(3, 120.0, 8000)


def test_a_frequency_past_nyquist_names_the_range() -> None:
    with pytest.raises(ValueError, match=r"^a filter frequency must be between 0 and 4000 Hz at 8000 Hz, not 4000.0$"):
        notch(4000.0, 10.0, 8000)


def mains_cleaner(rate: int, q: float) -> NDArray[np.float64]:
    notches = [notch(k * family, q, rate) for family in (50, 60) for k in range(1, 6)]
    return np.vstack([butterworth_highpass(4, 120.0, rate), *notches])


def cut_and_run(cascade: Cascade, x: NDArray[np.float64], state: NDArray[np.float64], seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.choice([0, 1, 7, 63, 64, 65, 160, 4000, 4097, 40000]))
        y, state = cascade.run(x[i : i + n], state)
        out.append(y)
        i += n
    return np.concatenate(out)


@pytest.mark.parametrize("q", [10.0, 100.0])
def test_blocks_of_any_length_give_what_sosfilt_gives_for_the_whole(q: float) -> None:
    # Q = 100 puts the 50 Hz notch's poles 0.9998 from the centre: the slowest ring-out the
    # cleaner allows, over a minute of audio, must not drift or blow up.
    sections = mains_cleaner(8000, q)
    rng = np.random.default_rng(3)
    x = 3000.0 * rng.standard_normal(60 * 8000) + 800.0
    zi = signal.sosfilt_zi(sections) * x[0]
    expected, final = signal.sosfilt(sections, x, zi=zi)
    cascade = Cascade(sections)
    primed = cascade.settled_state(x[0])
    assert np.abs(primed - zi).max() < 1e-9
    assert np.abs(cut_and_run(cascade, x, primed, seed=4) - expected).max() < 1e-7  # of about 1e4
    whole, state = cascade.run(x, primed)
    assert np.abs(whole - expected).max() < 1e-7
    assert np.abs(state - final).max() < 1e-7


def test_a_settled_state_gives_no_transient_for_a_constant_input() -> None:
    cascade = Cascade(mains_cleaner(8000, 10.0))
    y, _ = cascade.run(np.full(8000, 1234.0), cascade.settled_state(1234.0))
    assert np.abs(y).max() < 1e-8  # the high-pass passes no DC, and nothing rings


def test_an_empty_block_leaves_the_state_as_it_was() -> None:
    cascade = Cascade(mains_cleaner(8000, 10.0))
    state = cascade.settled_state(5.0)
    y, after = cascade.run(np.zeros(0), state)
    assert len(y) == 0
    assert np.array_equal(after, state)


def test_an_unstable_section_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^section 1 \(1 0 0 1 -2 1\) is unstable: sections need their poles"):
        Cascade([[1, 0, 0, 1, 0, 0], [1, 0, 0, 1, -2, 1]])


def test_a_state_of_the_wrong_shape_is_refused() -> None:
    cascade = Cascade(butterworth_highpass(4, 120.0, 8000))
    with pytest.raises(
        ValueError, match=r"^run takes a 1-D block and a state of shape \(2, 2\), not \(5,\) and \(3, 2\)$"
    ):
        cascade.run(np.zeros(5), np.zeros((3, 2)))
