"""Entry point: draw a picture from a trained generator, by its registry name or any other place it lives.

    python -m jobs.sample --model models:/dcgan-mnist@champion --num-images 64 --out grid.png
    python -m jobs.sample --model models:/dcgan-mnist@champion --interpolate 8 --out walk.png --seed 3
    python -m jobs.sample --model ray_results/<run name>/checkpoint_<time> --out grid.png
    python -m jobs.sample --model models:/dcgan-mnist-conditional@champion --class 7 --out sevens.png
"""
from __future__ import annotations

import sys
from pathlib import Path

from gan.config import ConfigError, SampleConfig, parse, resolve_tracking_uri
from gan.shards import storage


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(SampleConfig, argv)
        from gan.tracking.sampling import load, sample_picture

        storage.configure(config.s3_endpoint_url)
        sampler = load(config.model, resolve_tracking_uri(config.tracking_uri))
    except (ConfigError, FileNotFoundError, ValueError, storage.StorageError) as error:
        print(f"sample: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - MLflow's own errors (unknown name, alias, unreachable server)
        print(f"sample: --model {config.model}: {type(error).__name__}: {str(error).splitlines()[0]}",
              file=sys.stderr)
        return 2
    from PIL import Image

    try:
        picture = sample_picture(sampler, config.num_images, config.seed, config.interpolate, config.class_)
    except ValueError as error:
        print(f"sample: {error}", file=sys.stderr)
        return 2
    Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(config.out)
    what = (f"{max(1, config.num_images // config.interpolate)} rows of {config.interpolate}-step interpolations"
            if config.interpolate else f"{config.num_images} samples")
    if sampler.num_classes:
        what += f" of class {config.class_}" if config.class_ >= 0 else ", a row per class"
    print(f"sample: wrote {config.out} ({what} from {sampler.source}, seed {config.seed}; "
          f"{picture.shape[1]}x{picture.shape[0]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
