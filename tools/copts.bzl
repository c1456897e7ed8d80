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

MPX_COPTS = [
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
]

# GoogleTest's EXPECT_EQ(size_t, int) and friends trip -Wsign-compare.
MPX_TEST_COPTS = MPX_COPTS + [
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
