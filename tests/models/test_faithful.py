"""The shipped Old Faithful data are R's datasets::faithful (checks from data/SOURCES.md)."""

import numpy as np

from models import faithful


def test_faithful_is_the_r_data_set():
    x = faithful.load()
    assert x.shape == (272, 2)
    np.testing.assert_allclose(x.mean(0), [3.487783, 70.897059], atol=5e-7)
    np.testing.assert_array_equal(x[:2], [[3.6, 79.0], [1.8, 54.0]])
