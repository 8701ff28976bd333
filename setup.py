"""Build step for the one compiled part: the door's int8 scan kernel (device/_int8dot.c).

Everything else is in pyproject.toml. The kernel is optional: where no C compiler or Python
headers are present, `pip install` still succeeds and the door scans float32 with numpy (same
answers, slower at large galleries; `facelink.device.scan.kernel_isa()` says which, and so does the
door's health). On Raspberry Pi OS / Jetson: `apt install gcc python3-dev` before installing."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("facelink.device._int8dot", sources=["device/_int8dot.c"],
                             extra_compile_args=["-O3", "-pthread"],
                             extra_link_args=["-pthread"], optional=True)])
