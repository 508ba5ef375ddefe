"""Build of the native sampler (csrc/). Metadata lives in pyproject.toml.

The extension needs only a C++17 compiler and Python's headers: NVML is
dlopen'ed at run time, so no driver, GPU or CUDA toolkit is needed to build.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "phprof._sampler",
            sources=["csrc/sampler.cpp"],
            depends=["csrc/nvml_api.h"],
            include_dirs=["csrc"],
            extra_compile_args=["-std=c++17", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
            extra_link_args=["-pthread"],
            libraries=["dl"],
            language="c++",
        )
    ]
)
