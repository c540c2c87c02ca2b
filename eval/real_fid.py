#!/usr/bin/env python
"""FID / KID of a real data set's test split against its training split: the floor a model's FID is read against.

    python eval/real_fid.py --dataset mnist-5k --image-size 16 --num-samples 1000

Prints JSON: Inception FID/KID (inception-2015-12-05), domain FID/KID (the cached classifier, named), the
classifier's held-out accuracy and the Inception throughput measured on the way. An image folder without
``root/test`` compares the rest of the folder with its fixed held-out part (the domain classifier's test images;
``test_images`` in the output says which).
"""

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist-5k", help="a ddsm.data data set with train and test splits")
    p.add_argument("--image-size", type=int, default=16, help="resolution both splits are resized to")
    p.add_argument("--num-samples", type=int, default=1000, help="images per split (the first N of each)")
    p.add_argument("--root", help="data folder for data sets that need one")
    p.add_argument("--no-inception", action="store_true", help="domain features only (Inception is slow on a CPU)")
    args = p.parse_args(argv)
    if args.num_samples < 2 or args.image_size <= 0:
        p.error(f"--num-samples must be >= 2 and --image-size positive (got {args.num_samples}, {args.image_size})")

    import time

    import torch

    from ddsm.cli import fail
    from ddsm.data import load_with_held_out
    from ddsm.evaluation.metrics import (InceptionFeatures, extract_features, feature_stats, frechet_distance,
                              kernel_inception_distance, load_or_train_domain_classifier)

    try:  # an image folder without a test split: its fixed held-out part stands for it (recorded in the output)
        *splits, held_out = load_with_held_out(args.dataset, image_size=args.image_size, root=args.root)
        domain = load_or_train_domain_classifier(args.dataset, image_size=args.image_size, root=args.root)
    except (ValueError, OSError) as e:
        return fail(e)
    images = [d.images[: args.num_samples] if d.images is not None else
              torch.stack([d[i][0] for i in range(min(args.num_samples, len(d)))]) for d in splits]
    out = dict(dataset=args.dataset, resolution=args.image_size, num_samples=[len(x) for x in images],
               test_images={k: v for k, v in held_out.items() if k != "held_out"})

    def compare(net, prefix):
        start = time.perf_counter()
        train = extract_features(net, images[0], batch_size=32)
        out[f"{prefix}_images_per_s"] = len(images[0]) / (time.perf_counter() - start)
        test = extract_features(net, images[1], batch_size=32)
        out[f"{prefix}_fid"] = frechet_distance(*feature_stats(test), *feature_stats(train))
        out[f"{prefix}_kid"] = kernel_inception_distance(test, train)[0]
        out[f"{prefix}_features"] = net.name

    out["domain_classifier_accuracy"] = domain.test_accuracy
    compare(domain, "domain")
    if not args.no_inception:
        compare(InceptionFeatures(), "inception")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
