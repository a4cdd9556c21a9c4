"""Builds the native shim (hw/_native) with the machine's C compiler against Unicorn's headers."""
import os

import unicorn
from setuptools import Extension, setup

UNICORN_INCLUDE = os.path.join(os.path.dirname(unicorn.__file__), "include")

setup(
    ext_modules=[
        Extension(
            "softkvm.hw._native._shim",
            sources=["src/softkvm/hw/_native/shim.c", "src/softkvm/hw/_native/timer_ppi.c"],
            depends=["src/softkvm/hw/_native/shim.h"],
            include_dirs=[UNICORN_INCLUDE],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ]
)
