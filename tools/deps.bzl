"""Repositories a workspace needs to build mpx fully offline with Bazel 4.2.3.

Use from mpx's own WORKSPACE:

    load("//tools:deps.bzl", "mpx_dependencies")
    mpx_dependencies()

or from a project that depends on mpx:

    local_repository(name = "mpx", path = "/path/to/mpx")
    load("@mpx//tools:deps.bzl", "mpx_dependencies")
    mpx_dependencies()

Bazel appends a default WORKSPACE suffix that declares `rules_cc`, `rules_java` and
`remote_coverage_tools` as internet downloads. Bazel fetches the FIRST declaration of
a repository, so the ones declared here win (call this early, before other
dependencies' setup macros). Beware: `bazel query //external:remote_coverage_tools`
shows the LAST declaration (the suffix's http_archive), not the one fetched.

Every repository is declared only if the workspace has not declared one of the same
name already, so a user can override any of them (e.g. point `rules_cc` at a real
release) by declaring it before calling mpx_dependencies().

Nothing here downloads: the stand-ins are written by small repository rules, the rest
are local paths installed by Debian packages (see tools/install-deps).
"""

def _maybe(repo_rule, name, **kwargs):
    """Declares repository `name` unless the workspace already declared it."""
    if name not in native.existing_rules():
        repo_rule(name = name, **kwargs)

# --- rules_cc ---------------------------------------------------------------------
# The auto-configured C++ toolchain's BUILD file (and every mpx BUILD file) loads
# @rules_cc//cc:defs.bzl. Debian's bazel-rules-cc 0.0.4 needs a newer Bazel
# (`use_cpp_toolchain`), so this stand-in forwards each rule to the native one, the
# way Debian builds Bazel itself.

_RULES_CC_DEFS = '''\
"""Offline stand-in for rules_cc: every rule forwards to the native one (Bazel 4.2.3)."""

load(":private/native.bzl", "NativeCcInfo", "NativeCcToolchainConfigInfo", "native_cc_common")

CcInfo = NativeCcInfo
CcToolchainConfigInfo = NativeCcToolchainConfigInfo
cc_common = native_cc_common

def cc_binary(**attrs):
    native.cc_binary(**attrs)

def cc_library(**attrs):
    native.cc_library(**attrs)

def cc_test(**attrs):
    native.cc_test(**attrs)

def cc_import(**attrs):
    native.cc_import(**attrs)

def cc_proto_library(**attrs):
    native.cc_proto_library(**attrs)

def cc_toolchain(**attrs):
    native.cc_toolchain(**attrs)

def cc_toolchain_suite(**attrs):
    native.cc_toolchain_suite(**attrs)

def cc_shared_library(**attrs):
    native.cc_shared_library(**attrs)

def fdo_prefetch_hints(**attrs):
    native.fdo_prefetch_hints(**attrs)

def fdo_profile(**attrs):
    native.fdo_profile(**attrs)

def objc_library(**attrs):
    native.objc_library(**attrs)

def objc_import(**attrs):
    native.objc_import(**attrs)
'''

# Builtins are re-exported through a second file: a .bzl file cannot bind a global
# under the name of the builtin it reads.
_RULES_CC_NATIVE = '''\
NativeCcInfo = CcInfo
NativeCcToolchainConfigInfo = CcToolchainConfigInfo
native_cc_common = cc_common
'''

_RULES_CC_FIND_TOOLCHAIN = '''\
"""Offline stand-in for rules_cc's find_cc_toolchain.bzl."""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

def find_cc_toolchain(ctx):
    return find_cpp_toolchain(ctx)
'''

_RULES_CC_BUILD = '''\
package(default_visibility = ["//visibility:public"])

alias(
    name = "toolchain_type",
    actual = "@bazel_tools//tools/cpp:toolchain_type",
)

exports_files(["defs.bzl", "find_cc_toolchain.bzl"])
'''

def _rules_cc_stand_in_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "rules_cc")\n')
    rctx.file("BUILD.bazel", "")
    rctx.file("cc/BUILD.bazel", _RULES_CC_BUILD)
    rctx.file("cc/defs.bzl", _RULES_CC_DEFS)
    rctx.file("cc/private/native.bzl", _RULES_CC_NATIVE)
    rctx.file("cc/find_cc_toolchain.bzl", _RULES_CC_FIND_TOOLCHAIN)

rules_cc_stand_in = repository_rule(
    implementation = _rules_cc_stand_in_impl,
    local = True,
    doc = "rules_cc whose cc/defs.bzl forwards to the native C++ rules (offline, Bazel 4.2.3).",
)

# --- remote_coverage_tools --------------------------------------------------------
# Every test rule depends on the coverage report generator and lcov merger. Empty
# filegroups satisfy the dependency; `bazel coverage` is not supported offline.

_COVERAGE_BUILD = '''\
package(default_visibility = ["//visibility:public"])

filegroup(name = "coverage_report_generator")

filegroup(name = "lcov_merger")
'''

def _coverage_tools_stand_in_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "remote_coverage_tools")\n')
    rctx.file("BUILD.bazel", _COVERAGE_BUILD)

coverage_tools_stand_in = repository_rule(
    implementation = _coverage_tools_stand_in_impl,
    local = True,
    doc = "remote_coverage_tools with empty filegroups (no coverage, no download).",
)

# --- everything -------------------------------------------------------------------

def mpx_dependencies():
    """Declares every repository mpx needs; each one only if not declared yet."""
    _maybe(rules_cc_stand_in, name = "rules_cc")

    # Debian package bazel-rules-java.
    _maybe(
        native.local_repository,
        name = "rules_java",
        path = "/usr/share/bazel/rules/java",
    )
    _maybe(coverage_tools_stand_in, name = "remote_coverage_tools")

    # msgpack-c, spdlog, GoogleTest, Google Benchmark (and ZeroMQ, CAF for the benchmark
    # anchors) from Debian packages.
    _maybe(
        native.new_local_repository,
        name = "mpx_system",
        path = "/usr",
        # A string for this native rule; str(Label) resolves it from this file, so
        # it names mpx's copy both here and in a consumer workspace.
        build_file = str(Label("//third_party:system.BUILD")),
    )
