"""Builds the small C extensions: the /proc text parser, the trace op lines and the JSON row
writer."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vmascope.procfs._fastparse",
            sources=["src/vmascope/procfs/_fastparse.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-pthread"],
            extra_link_args=["-pthread"],
        ),
        Extension(
            "vmascope.ops._oplines",
            sources=["src/vmascope/ops/_oplines.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "vmascope.report._rows",
            sources=["src/vmascope/report/_rows.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
    ]
)
