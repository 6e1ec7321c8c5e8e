"""Command line for AWQ calibration: ``python -m pagedawq.quant MODEL OUTPUT_DIR [options]``.

``add_quantize_arguments`` / ``run_quantize`` let the ``pagedawq quantize`` console command reuse
the same options.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence


def _group_size(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"group size must be an integer (32, 64, 128 or -1), got {value!r}")


def add_quantize_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="local Hugging Face model directory, or 'smollm2-135m-instruct' "
                                      "for the default model")
    parser.add_argument("output_dir", type=Path, help="where to write the AWQ GEMM checkpoint")
    parser.add_argument("--w-bit", type=int, default=4, help="weight bits (only 4)")
    parser.add_argument("--group-size", type=_group_size, default=128,
                        help="input channels per scale/zero (32, 64, 128, or -1 for per channel); default 128")
    parser.add_argument("--no-zero-point", dest="zero_point", action="store_false",
                        help="symmetric quantization (fixed zero point)")
    parser.add_argument("--version", default="gemm", help="checkpoint layout (only 'gemm')")
    parser.add_argument("--calib-data", default="self",
                        help="calibration text: a .txt or .jsonl (field 'text') file, or 'self' to let the "
                             "model write it (default)")
    parser.add_argument("--n-samples", type=int, default=128, help="calibration blocks (default 128)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per calibration block (default 512)")
    parser.add_argument("--no-duo-scaling", dest="duo_scaling", action="store_false",
                        help="scale candidates from activations only (x^r) instead of x^r / w^(1-r)")
    parser.add_argument("--no-clip", dest="clip", action="store_false", help="skip the clipping search")
    parser.add_argument("--modules-to-not-convert", nargs="*", default=None, metavar="NAME",
                        help="linears whose name contains any of these stay in fp16")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1' ...")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the per-group search results")
    return parser


def run_quantize(args: argparse.Namespace) -> Path:
    """Quantize as the parsed options say, print the checkpoint path; bad input exits with its message."""
    from pagedawq.quant import quantize

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        path = quantize(args.model, args.output_dir, w_bit=args.w_bit, group_size=args.group_size,
                        zero_point=args.zero_point, version=args.version, calib_data=args.calib_data,
                        n_samples=args.n_samples, seq_len=args.seq_len, duo_scaling=args.duo_scaling,
                        clip=args.clip, modules_to_not_convert=args.modules_to_not_convert,
                        device=args.device, overwrite=args.overwrite)
    except (ValueError, OSError, ArithmeticError) as e:  # the quantizer's input errors
        raise SystemExit(f"error: {e}") from e
    print(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_quantize_arguments(argparse.ArgumentParser(
        prog="python -m pagedawq.quant", description="Quantize a model to int4 with AWQ (AutoAWQ GEMM format)."))
    run_quantize(parser.parse_args(argv))
    return 0
