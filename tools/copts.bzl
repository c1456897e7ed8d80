"""Compiler flags shared by every C++ target in mpx.

    load("//tools:copts.bzl", "MPX_COPTS", "MPX_TEST_COPTS")

    cc_library(name = "...", copts = MPX_COPTS, ...)
    cc_test(name = "..._test", copts = MPX_TEST_COPTS, ...)

Warnings are on, never errors: a newer compiler must not break a user's build.
System headers (/usr/include) are searched as system directories, so their warnings
stay quiet.

Component packages use mpx_library and mpx_test, which add these flags (and, for
tests, GoogleTest's main).
"""

load("@rules_cc//cc:defs.bzl", "cc_library", "cc_test")

_WARNING_COPTS = [
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
]

# mpx's own code is optimised in every compilation mode: Bazel's default (fastbuild)
# compiles without -O, and the pool then measured ~2x Python instead of ~7x. With -c dbg
# this gives -g -O2 (debuggable with optimised frames). Left out under the sanitizer
# configs (.bazelrc sets --define=mpx_sanitizer=1 and its own -O1, for exact reports)
# and with --define=mpx_optimize=0 (to step through mpx at -O0).
# str(Label()): resolved in mpx's repository even when a consumer workspace loads this file.
MPX_OPT_COPTS = select({
    str(Label("//tools:sanitizer")): [],
    str(Label("//tools:no_optimize")): [],
    "//conditions:default": ["-O2"],
})

MPX_COPTS = _WARNING_COPTS + MPX_OPT_COPTS

# GoogleTest's EXPECT_EQ(size_t, int) and friends trip -Wsign-compare. Test sources
# themselves stay at the mode's level (they compile faster); the libraries they test
# are optimised.
MPX_TEST_COPTS = _WARNING_COPTS + [
    "-Wno-sign-compare",
]

def mpx_library(name, **kwargs):
    """A framework component's library: cc_library with MPX_COPTS.

    Packages are private by default (package(default_visibility = private)): each
    library names who may depend on it in `visibility`.
    """
    cc_library(name = name, copts = MPX_COPTS, **kwargs)

def mpx_test(name, deps, srcs = None, size = "small", **kwargs):
    """A component's unit test: `<name>.cc` by default, MPX_TEST_COPTS, GoogleTest's main."""
    cc_test(
        name = name,
        size = size,
        srcs = srcs or [name + ".cc"],
        copts = MPX_TEST_COPTS,
        deps = deps + ["@mpx_system//:gtest_main"],
        **kwargs
    )
