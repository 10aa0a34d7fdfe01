"""The GPU path of one training step, and whether the loader keeps up with it. Needs a CUDA GPU (skips without).

For 32x32x1 and 64x64x3 at a large per-GPU batch: img/s of `train_step` on synthetic tensors in fp32 and bf16
autocast (channels_last, optionally torch.compile), the matmul/conv TFLOP/s that implies (FLOPs counted by
torch's FlopCounterMode over one step) and its fraction of the card's dense bf16 peak. Then the loader: decoded
samples/s of the training pipeline in 1 process and in all CPU cores' processes, against what the GPU consumes.

    python bench/gpu_step.py [--peak-tflops 989]     # 989 = H100 SXM dense bf16; last line is one JSON object
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.utils.flop_counter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import samples_per_second  # noqa: E402

from gan.shards.sources import load_digits  # noqa: E402
from gan.shards.writer import write_shards  # noqa: E402
from gan.training.models import ModelShape  # noqa: E402
from gan.training.state import TrainState  # noqa: E402
from gan.training.step import train_step  # noqa: E402


def step_rate(resolution: int, channels: int, batch: int, bf16: bool, compiled: bool, steps: int,
              channels_last: bool = True) -> dict:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    state = TrainState.create(ModelShape(resolution, channels, 100, 64, 64), 2e-4, 0.5, seed=0)
    state.generator.to("cuda", memory_format=layout)
    state.discriminator.to("cuda", memory_format=layout)
    if compiled:
        state.generator, state.discriminator = torch.compile(state.generator), torch.compile(state.discriminator)
    images = (torch.rand(batch, channels, resolution, resolution, device="cuda") * 2 - 1).contiguous(
        memory_format=layout)
    for _ in range(10 if compiled else 3):
        train_step(state, images, bf16=bf16)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        train_step(state, images, bf16=bf16)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, images, bf16=bf16)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"img_per_s": round(steps * batch / seconds), "tflops": round(counter.get_total_flops() * steps / seconds
                                                                          / 1e12, 1)}


def _loader_worker(root: str) -> float:
    return samples_per_second(root, passes=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the card's dense bf16 peak")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (the CPU path is bench/throughput.py)")
        return
    result: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "peak_bf16_tflops": args.peak_tflops}
    with tempfile.TemporaryDirectory() as tmp:
        shards = str(Path(tmp) / "digits32")
        write_shards(load_digits(32, 1), shards, 100, 0.1, 0)
        one = samples_per_second(shards, passes=3)
        with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
            started = time.perf_counter()
            counts = pool.map(_loader_worker, [shards] * os.cpu_count())
            all_cores = sum(counts)
        result.update({"loader_1_process_samples_per_s": round(one), "loader_all_cores_samples_per_s": round(all_cores),
                       "loader_seconds": round(time.perf_counter() - started, 1)})

    torch.backends.cudnn.benchmark = True
    print(f"{'case':<40}{'img/s':>10}{'TFLOP/s':>10}{'of bf16 peak':>14}")
    cases = [(32, 1, 1024, False, False, True), (32, 1, 1024, True, False, True), (32, 1, 4096, True, False, True),
             (32, 1, 1024, True, True, True), (32, 1, 1024, True, True, False), (32, 1, 1024, True, False, False),
             (64, 3, 512, False, False, True), (64, 3, 512, True, False, True), (64, 3, 512, True, True, False)]
    for resolution, channels, batch, bf16, compiled, channels_last in cases:
        key = (f"{resolution}x{resolution}x{channels}_b{batch}_{'bf16' if bf16 else 'fp32'}"
               f"{'_compile' if compiled else ''}{'' if channels_last else '_nchw'}")
        try:
            measured = step_rate(resolution, channels, batch, bf16, compiled, args.steps, channels_last)
        except Exception as error:  # noqa: BLE001 - a failing option is a finding to record, not the end of the run
            result[key] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            print(f"{key:<40}failed: {result[key]['error']}")
            torch._dynamo.reset()
            continue
        measured["fraction_of_peak"] = round(measured["tflops"] / args.peak_tflops, 3)
        result[key] = measured
        print(f"{key:<40}{measured['img_per_s']:>10}{measured['tflops']:>10}{measured['fraction_of_peak']:>14.1%}")
    best32 = max(v.get("img_per_s", 0) for k, v in result.items() if k.startswith("32x32x1"))
    result["loader_all_cores_over_best_32x32x1"] = round(result["loader_all_cores_samples_per_s"] / best32, 2)
    print(f"loader: 1 process {result['loader_1_process_samples_per_s']} samples/s, {os.cpu_count()} processes "
          f"{result['loader_all_cores_samples_per_s']}; best 32x32x1 step consumes {best32} img/s")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "gpu_step.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
