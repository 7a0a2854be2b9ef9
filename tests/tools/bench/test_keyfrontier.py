"""`bench keyfrontier`: point specs, one small run with a stand-in attack, the JSON fields and the plot."""
from __future__ import annotations

import numpy as np
import pytest

from base.errors import ConfigError
from tools.bench.keyfrontier import FrontierPoint, plot_frontier, profile_from_spec, run_frontier


def test_point_specs_name_profiles_or_multiplexed_keys():
    mix, fold = profile_from_spec("mix15x1"), profile_from_spec("fold7x2c2")
    assert mix.sensor_stage and mix.sensor.scatter == 15 and mix.sensor.stages == 1 and not mix.spatial_layers
    assert not fold.sensor_stage and fold.sensor.stages == 2 and fold.sensor.cond_factor == 2.0
    assert profile_from_spec("stem").name == "stem"
    for bad in ("mix4x1", "mix15y2", "nonsense"):
        with pytest.raises(ConfigError):
            profile_from_spec(bad)


@pytest.mark.slow
def test_a_small_frontier_run_scores_the_attack_against_cost(tmp_path):
    def placed_in_order(keyed, public):                # a stand-in attack: keyed pixels left where they are
        return keyed / 255.0
    points = run_frontier(["mnist"], ["mix15x1"], [100], limit=60, public=100, attack=placed_in_order)
    (p,) = points
    assert isinstance(p, FrontierPoint) and p.profile == "mix15x1" and p.size_ratio < 2.0
    assert abs(p.acc_keyed_int8 - p.acc_float) < 0.1 and p.latency_ratio > 0
    (f,) = p.frames_only
    assert f.frames == 100 and f.recognised < 0.35 and f.ssim < f.ssim_blank       # keyed frames are not images
    png = tmp_path / "frontier.png"
    plot_frontier(points, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(f.ssim)
