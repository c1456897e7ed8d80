"""Compiler flags shared by every C++ target in mpx.

    load("//tools:copts.bzl", "MPX_COPTS", "MPX_TEST_COPTS")

    cc_library(name = "...", copts = MPX_COPTS, ...)
    cc_test(name = "..._test", copts = MPX_TEST_COPTS, ...)

Warnings are on, never errors: a newer compiler must not break a user's build.
System headers (/usr/include) are searched as system directories, so their warnings
stay quiet.
"""

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
