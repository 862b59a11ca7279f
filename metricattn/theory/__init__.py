"""Theory probes (paper section 2, issue 6): attention as a drift-diffusion step.

  manifolds    circle and sphere with known densities, test functions and the analytic
               operator L H = Laplace-Beltrami H + 2 <grad log p, grad H>
  operator     (S H - H)/(eps/2) with the project's `l2_attention`, blockwise over queries;
               its N = infinity limit by quadrature
  convergence  error over a grid of N and eps, split into bias and variance
  nearest      the dot product's "nearest point" map A^T x/|A^T x| and one attention step
  depth        stacked attention without skips: rank, clusters, eigenvalues of S near 1
  report       `python -m metricattn.theory --out DIR [--quick]` writes report.md and figures
  trained      `python -m metricattn.theory trained`: the Moon IPNs of the `moons`
               experiment; per layer the asymmetry and metric-ness of the learned attention,
               clustering
"""
