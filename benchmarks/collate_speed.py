"""The loader's share of a step: ``ClipCollator`` stacking uint8 clips and computing RLT's keep mask, on one
CPU thread, as a data-loader worker runs it. Usage (from the repository root):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/collate_speed.py [BATCH] [FRAMES] [SIZE]

Prints the best of three batches with the keep mask, and the stacking alone (``drop=None``). Half the clips
repeat from their third time step on, so that RLT drops tokens.
"""

import sys
import time

import torch

from rlt import RLTVideoMAEConfig
from rlt.collator import ClipCollator

batch, frames, size = (int(value) for value in (sys.argv[1:] + ["64", "16", "224"][len(sys.argv) - 1 :]))
config = RLTVideoMAEConfig(image_size=size, num_frames=frames, num_labels=8)
generator = torch.Generator().manual_seed(0)
clips = [
    {"pixel_values": torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=generator), "labels": 0}
    for _ in range(batch)
]
for clip in clips[::2]:
    clip["pixel_values"][4:] = clip["pixel_values"][4]


def best_of_three(collator) -> float:
    collator(clips[:2])  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        collator(clips)
        times.append(time.perf_counter() - start)
    return min(times)


with_mask = best_of_three(ClipCollator.for_model(config))
stacking = best_of_three(ClipCollator.for_model(config, drop=None))
print(f"{batch} clips of {frames}x{size}px, {torch.get_num_threads()} thread(s): with the keep mask "
      f"{1000 * with_mask:.0f} ms ({batch / with_mask:.0f} clips/s), stacking alone {1000 * stacking:.0f} ms")
