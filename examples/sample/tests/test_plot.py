# SPDX-License-Identifier: MIT
# Copyright (c) 2023-2024 The Tidepool Authors

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import plot  # noqa: E402


class RenderTest(unittest.TestCase):
    def test_one_polyline_per_station(self):
        series = {"NORTH": [(0, 100.0), (300, 110.0)], "LOCK": [(0, 90.0), (600, 95.0)]}
        svg = plot.render(series)
        self.assertEqual(svg.count("<polyline"), 2)

    def test_empty_log_is_an_error(self):
        with self.assertRaises(ValueError):
            plot.render({})

    def test_load_skips_comment_rows(self):
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("station,time,level_cm\n#calibrated,0,0\nNORTH,60,101.5\n")
        try:
            self.assertEqual(plot.load(f.name), {"NORTH": [(60, 101.5)]})
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main()
