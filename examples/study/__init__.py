"""The second cluttered-digits study: do SGE's gates pick out the object?

`python -m examples.study.run --out docs/study/v2` trains a small ResNet
(3x3 stride-1 stem, maps 32/16/8) in four arms and measures, per SGE group,
whether the gate and the normalised similarity map point at the digit. The
design, fixed before the run, is in `docs/study/DESIGN.md`.

Modules: `network` (the arms and the knock-out variants), `measures`
(c_hat, AUCs, the sign folding, the null, norm ratios, paired statistics),
`decision` (the decision rule as code), `report` (RESULTS.md and the
figure) and `run` (the command line).

The first study, `examples/ablation.py`, keeps its design and statistics
in `ablation_summary` and its RESULTS.md and figures in `ablation_report`.
Both studies share `localisation` (where the gates point, per pixel) and
`common` (the machine record, figures).
"""
