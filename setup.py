"""Builds the small C extension that parses /proc text at kernel speed."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vmascope.procfs._fastparse",
            sources=["src/vmascope/procfs/_fastparse.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
