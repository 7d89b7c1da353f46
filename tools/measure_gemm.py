#!/usr/bin/env python3
"""Time matmuls on this machine's GPU and write the CSV that MoeNotebooks' calibrated cost model reads.

Each shape is C[m x n] = A[m x k] @ B[k x n] (FLOPs = 2mnk). For every shape the script runs `--warmup`
untimed iterations, then times `--repeats` iterations one by one with CUDA events and records the median
(and the minimum in the context column). Output columns, one row per shape:

    gpu,dtype,m,n,k,time_us,tflops,context,measurement,source

`time_us` is the median kernel time in microseconds; numbers are written with a decimal point whatever the
locale. Use the file in a scenario:

    "costModel": {"kind": "calibrated", "gemm": "data/measured/h200-bf16.csv", "gpu": "<the gpu column>"}

Examples:
    python3 tools/measure_gemm.py --out h200-bf16.csv                      # default grid, bf16
    python3 tools/measure_gemm.py --dtype fp16 --m 1024,4096 --n 4096,8192 --k 4096 --out small.csv
    python3 tools/measure_gemm.py --shapes 4096x8192x8192,2048x28672x8192 --out mine.csv   # m x n x k
"""
from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "tf32": "float32"}

# Token counts (m) and linear-layer widths (n, k) typical of transformer layers under tensor parallelism.
DEFAULT_M = [256, 1024, 2048, 4096, 8192, 16384]
DEFAULT_N = [1024, 2048, 4096, 6144, 8192, 14336, 28672]
DEFAULT_K = [1024, 2048, 4096, 8192, 14336]


def ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers separated by commas")
    return values


def shapes(text: str) -> list[tuple[int, int, int]]:
    out = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"{item!r}: write a shape as MxNxK, e.g. 4096x8192x8192")
        m, n, k = (int(p) for p in parts)
        if min(m, n, k) <= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: sizes must be positive")
        out.append((m, n, k))
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="operand dtype (default bf16)")
    p.add_argument("--m", type=ints, default=DEFAULT_M, help="comma-separated m values (rows of A and C)")
    p.add_argument("--n", type=ints, default=DEFAULT_N, help="comma-separated n values (columns of B and C)")
    p.add_argument("--k", type=ints, default=DEFAULT_K, help="comma-separated k values (the reduction)")
    p.add_argument("--shapes", type=shapes, help="explicit MxNxK list; replaces the --m/--n/--k grid")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations per shape (default 10)")
    p.add_argument("--repeats", type=int, default=50, help="timed iterations per shape; the median is kept (default 50)")
    p.add_argument("--flush-l2", action="store_true", help="overwrite a 256 MB buffer before each timed iteration (cold L2)")
    p.add_argument("--device", default="cuda:0", help="torch device (default cuda:0)")
    p.add_argument("--gpu-name", help="value of the gpu column (default: torch.cuda.get_device_name)")
    args = p.parse_args(argv)
    if args.warmup < 0 or args.repeats < 1:
        p.error("--warmup must be >= 0 and --repeats >= 1")
    return args


def time_shape(torch, m: int, n: int, k: int, dtype, device, warmup: int, repeats: int, flush) -> list[float]:
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    c = torch.empty(m, n, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize(device)
    times_ms = []
    for _ in range(repeats):
        if flush is not None:
            flush.zero_()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    del a, b, c
    return times_ms


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("error: PyTorch is required (pip install torch)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    torch.backends.cuda.matmul.allow_tf32 = args.dtype == "tf32"
    gpu = args.gpu_name or torch.cuda.get_device_name(device)
    grid = args.shapes or list(itertools.product(args.m, args.n, args.k))
    flush = torch.empty(256 * 1024 * 1024 // 4, device=device, dtype=torch.float32) if args.flush_l2 else None
    measurement = (f"torch.matmul {args.dtype}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
                   f"median of {args.repeats} CUDA-event-timed iterations after {args.warmup} warm-up"
                   + ("; L2 flushed before each" if flush is not None else "; warm L2"))
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["gpu", "dtype", "m", "n", "k", "time_us", "tflops", "context", "measurement", "source"])
        for i, (m, n, k) in enumerate(grid, 1):
            try:
                times = time_shape(torch, m, n, k, dtype, device, args.warmup, args.repeats, flush)
            except torch.cuda.OutOfMemoryError:
                print(f"skip {m}x{n}x{k}: out of memory", file=sys.stderr)
                torch.cuda.empty_cache()
                continue
            median_us = statistics.median(times) * 1e3
            tflops = 2.0 * m * n * k / (median_us * 1e-6) / 1e12
            w.writerow([gpu, args.dtype, m, n, k, f"{median_us:.3f}", f"{tflops:.2f}",
                        f"grid m={m} n={n} k={k}; min_us={min(times) * 1e3:.3f}", measurement, "tools/measure_gemm.py"])
            f.flush()
            print(f"[{i}/{len(grid)}] {m}x{n}x{k}: {median_us:.1f} us, {tflops:.1f} TFLOP/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
