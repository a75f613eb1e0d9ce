"""Speed and memory figures for the sweep, measured on the real CIFAR-10: `python -m benchmarks`.

One command (`make bench`, or `python -m benchmarks`; `--quick` for a smoke check, `--only` to pick
sections, `--out FILE.json`) measures on one machine:

(a) throughput.py     train img/s of the seed notebook's loop (PIL + torchvision transforms +
                      DataLoader) against `cifar_core.train.fit` (1 or 2 threads, channels_last or
                      NCHW), and of 2 concurrent 1-thread trials: threads per trial or trials at once;
(b) sweep_overhead.py the share of a 16-trial `python -m sweep.grid`'s wall time spent outside trials
                      (Ray start-up, scheduling, recording, tear-down);
(c) memory.py         peak PSS/RSS of a sweep with 1 and with 2 trials at once, against the 184 MB
                      dataset that Ray's object store holds once for all trials.

seed_loop.py is the seed-style baseline, sweeps.py runs a sweep as a subprocess, report.py renders
the tables. These are measurements, not tests: tests/test_benchmarks.py only checks they run.
"""
