#!/usr/bin/python3
"""Interop test: Debian's grpcio (an independent gRPC implementation of the
client side) against the C echo-server built on core/rpcserver.c.

Usage: interop.py ECHO_SERVER PROTO_DIR [DROVER_PROTO_ROOT]

Stubs are generated at test time from echo.proto with grpc_tools.protoc into
a scratch folder (testutil.grpc_stubs, tests/lib/testutil.py).  With
DROVER_PROTO_ROOT (the project's proto/), the rich error model is checked
too: a failure's trailing metadata grpc-status-details-bin decodes with
Python's protobuf as a google.rpc.Status (compiled here from Drover's copy
of status.proto, since Debian has no googleapis-common-protos) whose Any
holds the EchoReply detail.  Only
/usr/bin/python3 sees Debian's grpcio; without it the test exits 77 (skipped)
with the reason.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import testutil as tu  # noqa: E402
from testutil import check  # noqa: E402

try:
    import grpc
    import grpc_tools  # noqa: F401
except ImportError as e:
    print(f"SKIP: python3-grpcio / python3-grpc-tools not importable: {e}")
    sys.exit(77)


def expect_error(fn, code):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code() == code, f"{e.code()} {e.details()}"
    return False, "no error"


def check_status_details(stub, echo_pb2, proto_root, tmp):
    """Fail with a detail; decode the trailer as an independent client does."""
    # status.proto under another file name: its package stays google.rpc, and
    # the import of google/protobuf/any.proto resolves to Python's own.
    sdir = os.path.join(tmp, "rpcstatus")
    os.makedirs(sdir, exist_ok=True)
    shutil.copy(os.path.join(proto_root, "google", "rpc", "status.proto"), os.path.join(sdir, "rpc_status.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{sdir}", f"-I{proto_root}",
                    f"--python_out={sdir}", "rpc_status.proto"], check=True)
    sys.path.insert(0, sdir)
    import rpc_status_pb2  # noqa: E402
    try:
        stub.Fail(echo_pb2.EchoRequest(text="held", errno_value=16, count=7), timeout=5)
        check("Fail with a detail -> FAILED_PRECONDITION", False, "no error")
        return
    except grpc.RpcError as e:
        err = e
    check("Fail with a detail -> FAILED_PRECONDITION", err.code() == grpc.StatusCode.FAILED_PRECONDITION,
          f"{err.code()} {err.details()}")
    bins = [v for k, v in (err.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
    check("trailer grpc-status-details-bin present, raw bytes", len(bins) == 1 and isinstance(bins[0], bytes),
          repr(err.trailing_metadata()))
    st = rpc_status_pb2.Status()
    st.ParseFromString(bins[0])
    check("google.rpc.Status repeats code and message",
          st.code == 9 and st.message == "failing as asked: held" == err.details(), repr(st))
    reply = echo_pb2.EchoReply()
    ok = (len(st.details) == 1 and st.details[0].type_url == "type.googleapis.com/drover.test.v1.EchoReply"
          and st.details[0].Unpack(reply))
    check("its Any unpacks as the EchoReply detail", ok and reply.text == "held" and reply.seq == 7, repr(st))


def main():
    server_bin, proto_dir = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="drover-interop-")
    echo_pb2, echo_pb2_grpc = tu.grpc_stubs(proto_dir, "echo", tmp)

    sock = os.path.join(tmp, "echo.sock")
    srv = subprocess.Popen([server_bin, "-t", "8", "127.0.0.1:0", f"unix:{sock}"],
                           stdout=subprocess.PIPE, text=True)
    port = None
    try:
        for line in srv.stdout:
            if line.startswith("LISTEN 127.0.0.1:0 "):
                port = int(line.split()[2])
            if line.strip() == "READY":
                break
        check("server ready", port is not None)
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = echo_pb2_grpc.EchoerStub(ch)

        r = stub.Echo(echo_pb2.EchoRequest(text="héllo"), timeout=5)
        check("unary Echo", r.text == "héllo", repr(r))

        replies = list(stub.Watch(echo_pb2.EchoRequest(text="w", count=4, interval_ms=10), timeout=5))
        check("stream Watch", [x.seq for x in replies] == [0, 1, 2, 3], repr(replies))

        nope = ch.unary_unary("/drover.test.v1.Echoer/Nope")
        ok, d = expect_error(lambda: nope(b"", timeout=5), grpc.StatusCode.UNIMPLEMENTED)
        check("unknown method -> UNIMPLEMENTED", ok, d)
        other = ch.unary_unary("/no.such.Service/Thing")
        ok, d = expect_error(lambda: other(b"", timeout=5), grpc.StatusCode.UNIMPLEMENTED)
        check("unknown service -> UNIMPLEMENTED", ok, d)

        raw = ch.unary_unary("/drover.test.v1.Echoer/Echo")
        ok, d = expect_error(lambda: raw(b"\x0a\xff\xff", timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
        check("malformed bytes -> INVALID_ARGUMENT", ok, d)

        t0 = time.monotonic()
        ok, d = expect_error(lambda: stub.Sleep(echo_pb2.EchoRequest(), timeout=0.2),
                             grpc.StatusCode.DEADLINE_EXCEEDED)
        el = time.monotonic() - t0
        check("deadline -> DEADLINE_EXCEEDED", ok and 0.15 < el < 2.0, f"{d} after {el:.3f}s")

        try:
            stub.Fail(echo_pb2.EchoRequest(text="x", errno_value=2), timeout=5)
            check("Fail ENOENT -> NOT_FOUND", False, "no error")
        except grpc.RpcError as e:
            check("Fail ENOENT -> NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND
                  and e.details() == "failing as asked: x", f"{e.code()} {e.details()}")

        if len(sys.argv) > 3:
            check_status_details(stub, echo_pb2, sys.argv[3], tmp)

        it = stub.Watch(echo_pb2.EchoRequest(text="c", count=100, interval_ms=1000), timeout=30)
        first = next(it)
        it.cancel()
        ok, d = expect_error(lambda: next(it), grpc.StatusCode.CANCELLED)
        check("client cancel -> CANCELLED", first.seq == 0 and ok, d)

        uch = grpc.insecure_channel(f"unix:{sock}")
        r = echo_pb2_grpc.EchoerStub(uch).Echo(echo_pb2.EchoRequest(text="unix"), timeout=5)
        check("unary over unix socket", r.text == "unix")
        uch.close()
        ch.close()

        srv.send_signal(signal.SIGTERM)
        out, _ = srv.communicate(timeout=10)
        check("clean exit on SIGTERM", srv.returncode == 0 and "SHUTDOWN" in out, f"rc={srv.returncode} {out!r}")
        check("unix socket removed", not os.path.exists(sock))
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return tu.finish()


if __name__ == "__main__":
    sys.exit(main())
