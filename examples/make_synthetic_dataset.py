"""Write the generated motion task of rlt.synthetic as mp4 files in class folders, or as clip caches.

    python examples/make_synthetic_dataset.py rlt_out/synthetic --train 800 --validation 160
    python examples/make_synthetic_dataset.py rlt_out/synthetic --train 0 --validation 800 --cache --device cuda

Videos (needs PyAV and scikit-image): OUT/train/<class>/*.mp4 and OUT/validation/<class>/*.mp4, the
lists OUT/train.csv and OUT/validation.csv (path,label) and OUT/labels.csv (id,label). Train with them:

    python examples/train_video_classification.py --train OUT/train.csv --eval OUT/validation.csv ...

With --cache, OUT/train and OUT/validation are clip caches of the uint8 clips as rendered (no
encoding, no PyAV), for `rlt evaluate` and `--cache` / `--eval-cache`. Either way the clips are those
`--synthetic` renders in memory (same seeds); videos are encoded with H.264 (CRF 18).
"""

from __future__ import annotations

import argparse
import time

from rlt.synthetic import CLASS_NAMES, TASK_VARIANTS, task_config, write_synthetic_cache, write_synthetic_split

VALIDATION_SEED_OFFSET = 1_000_003  # as in train_video_classification.py: other clips than training's


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output folder")
    parser.add_argument("--train", type=int, default=800, help="training clips (default 800)")
    parser.add_argument("--validation", type=int, default=160, help="validation clips (default 160)")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=sorted(TASK_VARIANTS), default="full", help="task variant (default full)")
    parser.add_argument("--time-step", type=float, default=1.0, help="0.5 renders at twice the frame rate")
    parser.add_argument("--classes", nargs="+", choices=CLASS_NAMES, default=list(CLASS_NAMES))
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality (0 lossless, default 18)")
    parser.add_argument("--device", help="render on this torch device (default cpu)")
    parser.add_argument("--cache", action="store_true", help="write clip caches (uint8, no PyAV) instead of mp4 files")
    args = parser.parse_args(argv)

    config = task_config(
        args.variant,
        num_frames=args.num_frames,
        image_size=args.image_size,
        classes=tuple(args.classes),
        time_step=args.time_step,
    )
    for split, count, seed in (
        ("train", args.train, args.seed),
        ("validation", args.validation, args.seed + VALIDATION_SEED_OFFSET),
    ):
        if count <= 0:
            continue
        start = time.perf_counter()
        if args.cache:
            written = write_synthetic_cache(f"{args.out}/{split}", count, seed=seed, config=config, device=args.device)
        else:
            written = write_synthetic_split(
                args.out, split, count, seed=seed, config=config, device=args.device, fps=args.fps, crf=args.crf
            )
        print(f"{split}: {count} clips in {time.perf_counter() - start:.1f} s: {written}")


if __name__ == "__main__":
    main()
