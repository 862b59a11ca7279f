"""The mesh_seg experiment end to end draws its segmentation figure and links it in the report."""

from tests.helpers import cli


def test_mesh_seg_experiment_draws_the_segmentation_figure(tmp_path):
  root, results = tmp_path / "root", tmp_path / "results"
  out = cli("metricattn.experiment", "mesh_seg", "--budget", "test", "--root", str(root),
            "--results", str(results))
  assert out.returncode == 0, out.stderr
  png = (root / "segmentation.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 50_000
  assert "![segmentation of 4 test meshes, seed 0](segmentation.png)" in (
      root / "report.md").read_text()
  assert (results / "segmentation.png").read_bytes() == png
