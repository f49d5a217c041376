#!/usr/bin/python3
"""The .proto files compile from the one import root, as a user of the API
compiles them: `protoc -I proto --descriptor_set_out=/dev/null
drover/v1/coordinator.proto drover/v1/agent.proto` (and gRPC's health.proto
and the rich error model's google/rpc/status.proto beside them).  coordinator.proto imports "drover/v1/agent.proto"; an import
written relative to its own folder ("agent.proto") fails here.

The compiler: protoc (Debian's protobuf-compiler); else python3 -m
grpc_tools.protoc; else protoc-c, whose front end is the same libprotoc
command line (it is always there: the build needs it).  Exit 77 (skipped)
when none is found.  Environment: DROVER_SOURCE_ROOT (set by meson)."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import testutil as tu  # noqa: E402

ROOT = os.environ.get("DROVER_SOURCE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PROTOS = ["drover/v1/coordinator.proto", "drover/v1/agent.proto", "grpc/health/v1/health.proto",
          "google/rpc/status.proto", "google/protobuf/any.proto"]


def compiler():
    if shutil.which("protoc"):
        return [shutil.which("protoc")]
    if subprocess.run([sys.executable, "-c", "import grpc_tools.protoc"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "grpc_tools.protoc"]
    if shutil.which("protoc-c"):
        return [shutil.which("protoc-c")]
    return None


def run(cmd, *args):
    p = subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True)
    return p.returncode, p.stderr.strip()


def main():
    cmd = compiler()
    if not cmd:
        print("# SKIP: no protoc, grpc_tools or protoc-c")
        return 77
    print(f"# compiler: {' '.join(cmd)}")
    rc, err = run(cmd, "-I", "proto", "--descriptor_set_out=/dev/null", *PROTOS)
    tu.check("protoc -I proto compiles coordinator.proto, agent.proto, health.proto and status.proto", rc == 0, err)
    rc, err = run(cmd, "-I", "proto", "--descriptor_set_out=/dev/null", "drover/v1/coordinator.proto")
    tu.check("coordinator.proto alone finds its import under -I proto", rc == 0, err)
    # the check itself can fail: an import the root does not resolve is refused
    rc, err = run(cmd, "-I", "proto/drover", "--descriptor_set_out=/dev/null", "v1/coordinator.proto")
    tu.check("a wrong import root is refused (the check can fail)", rc != 0 and "agent.proto" in err, err)
    return tu.finish()


if __name__ == "__main__":
    sys.exit(main())
