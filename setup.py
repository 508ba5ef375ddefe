"""Build of the native sampler (csrc/) and, where nvcc is found, the CUDA load kernels
of `phprof calibrate`. Metadata lives in pyproject.toml.

The sampler needs only a C++17 compiler and Python's headers: NVML is dlopen'ed at
run time, so no driver, GPU or CUDA toolkit is needed to build. The load kernels
(csrc/load.cu) are a plain C library for ctypes, built with nvcc ($PHPROF_NVCC, else
nvcc on PATH, else $CUDA_HOME/bin/nvcc or /usr/local/cuda/bin/nvcc); without nvcc
they are skipped and the package installs without them (`phprof calibrate` on a GPU
then builds them at run time where it can, or says why it cannot).
"""
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

LOAD_EXT = "phprof._gpuload"
NVCC_FLAGS = ["-O2", "-shared", "-Xcompiler", "-fPIC", "-arch=all-major"]


def find_nvcc():
    for candidate in (os.environ.get("PHPROF_NVCC"), shutil.which("nvcc"),
                      os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class BuildWithCuda(build_ext):
    def build_extension(self, ext):
        if ext.name != LOAD_EXT:
            return super().build_extension(ext)
        nvcc = find_nvcc()
        if nvcc is None:
            print("phprof: no nvcc found: the CUDA load kernels of `phprof calibrate` are not built")
            return
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        cmd = [nvcc, *NVCC_FLAGS, *ext.sources, "-o", target]
        print(" ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:  # the package works without them: say so, do not fail the install
            print(f"phprof: building the CUDA load kernels failed (skipped):\n{done.stderr[-2000:]}")


setup(
    cmdclass={"build_ext": BuildWithCuda},
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
        ),
        Extension(LOAD_EXT, sources=["csrc/load.cu"], optional=True),
    ],
)
