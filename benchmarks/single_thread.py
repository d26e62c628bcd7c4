"""Imported first by the benchmarks that time core-seconds: one thread for the BLAS, OpenMP
and OpenCV pools, set before numpy or OpenCV loads (they read it once, at start-up), so a
figure is the work of one core whatever the machine has."""

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENCV_FOR_THREADS_NUM",
):
    os.environ[_var] = "1"
