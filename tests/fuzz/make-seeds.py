#!/usr/bin/python3
"""Write the seed corpora of tests/fuzz/corpus/<target>/ (docs/fuzzing.md).

Seeds are small and few: real QEMU and qemu-ga messages from tests/data
(recorded QEMU 7.2 session, libvirt's test transcripts), the documented
JSON forms of the definitions and configurations, and protobuf messages of
the Agent and Coordinator APIs packed with the Python protobuf runtime
from proto/drover/v1.  Run from anywhere; it rewrites the corpus folders.
Needs python3-protobuf and python3-grpc-tools (tests/scripts/setup.sh).
"""
import json, os, shutil, subprocess, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.normpath(os.path.join(here, "..", ".."))
out = os.path.join(here, "corpus")


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reset(target):
    shutil.rmtree(os.path.join(out, target), ignore_errors=True)


# ---- QMP ------------------------------------------------------------------
reset("qmp-wire")
seen = set()
for line in open(os.path.join(root, "tests/data/qmp/qmp-migration-session-simple.jsonl")):
    r = json.loads(line)
    if r["dir"] != "<-":
        continue
    raw = r["raw"].rstrip("\r\n")
    key = raw[:40]
    if key in seen or len(seen) >= 24:
        continue
    seen.add(key)
    greeted = b"0" if raw.startswith('{"QMP"') else b"1"
    put("qmp-wire", "session-%02d" % len(seen), greeted + raw.encode())
for name in ["basic.reply", "tls.reply", "unsupported.reply"]:
    text = open(os.path.join(root, "tests/data/qmp/migparams", name)).read().strip()
    put("qmp-wire", "migparams-" + name, b"1" + text.replace("\n", " ").encode())

greeting = ('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},'
            ' "capabilities": ["oob"]}}\n')
reset("qmp-channel")
put("qmp-channel", "session", greeting + "%%\n" + "%%\n".join([
    '{"return": {}, "id": @ID@}\n',
    '{"return": {"status": "running", "singlestep": false, "running": true}, "id": @ID@}\n',
    '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "MIGRATION", "data": {"status": "active"}}\n'
    '{"return": {"status": "active", "ram": {"total": 1073741824, "remaining": 4096, "transferred": 99,'
    ' "dirty-pages-rate": 10, "mbps": 900.5, "dirty-sync-count": 3}, "expected-downtime": 300}, "id": @ID@}\n',
    '{"return": {"downtime-limit": 300, "max-bandwidth": 134217728, "multifd-channels": 2}, "id": @ID@}\n',
    '{"return": [{"state": false, "capability": "xbzrle"}, {"state": true, "capability": "events"}], "id": @ID@}\n',
    '{"return": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian"}, "id": @ID@}\n',
    '{"timestamp": {"seconds": 3, "microseconds": 4}, "event": "STOP"}\n{"return": {}, "id": @ID@}\n',
]))
put("qmp-channel", "errors", greeting + "%%\n" + "%%\n".join([
    '{"return": {}, "id": @ID@}\n',
    '{"error": {"class": "GenericError", "desc": "no"}, "id": @ID@}\n',
    '{"error": {"class": "CommandNotFound", "desc": "The command query-migrate has not been found"}}\n',
    '{"return": {"status": "setup"}, "id": 99}\n',
]))

# ---- QGA ------------------------------------------------------------------
agent_cases = json.load(open(os.path.join(root, "tests/data/qga/exchanges.json")))["cases"]
reset("qga-wire")
for i, c in enumerate(agent_cases[:24]):
    if "reply" in c:
        put("qga-wire", "libvirt-%02d" % i, json.dumps(c["reply"]))
info = {"return": {"version": "7.2.0", "supported_commands": [
    {"enabled": True, "name": n, "success-response": True}
    for n in ["guest-ping", "guest-get-time", "guest-set-time", "guest-network-get-interfaces",
              "guest-sync-delimited", "guest-info", "guest-get-osinfo"]]}}
put("qga-wire", "guest-info", json.dumps(info))
put("qga-wire", "sync", '{"return": 1234567890123}')
reset("qga-channel")
sync = '\xff{"return": @ID@}\n'
ifaces = {"return": [{"name": "eth0", "hardware-address": "52:54:00:12:34:56", "ip-addresses": [
    {"ip-address-type": "ipv4", "ip-address": "10.0.0.2", "prefix": 24}]},
    {"name": "eth0:1", "ip-addresses": [{"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64}]}]}
put("qga-channel", "session", "%%\n".join([
    sync, json.dumps(info) + "\n", '{"return": {}}\n', '{"return": 1700000000000000000}\n',
    json.dumps(ifaces) + "\n", '{"return": {"id": "debian"}}\n', '{"return": {}}\n']).encode("latin-1"))
put("qga-channel", "stale", "%%\n".join([
    '{"return": {}}\n{"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}}\n' + sync,
    '{"error": {"class": "CommandNotFound", "desc": "guest-info"}}\n',
    '{"return": 5}\n', sync, '{"error": {"class": "CommandDisabled", "desc": "disabled"}}\n']).encode("latin-1"))

# ---- definitions and configurations ---------------------------------------
reset("guest-def")
put("guest-def", "minimal", '{"name": "vm1", "memory_mib": 128, "kernel": "/boot/vmlinuz"}')
put("guest-def", "full", json.dumps({
    "name": "db-1", "uuid": "8b5c1f0e-1a2b-4c3d-9e8f-0123456789ab", "memory_mib": 2048, "vcpus": 4,
    "machine": "pc-q35-7.2", "cpu_model": "host", "kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img",
    "append": "console=ttyS0", "guest_agent": True, "serial_log": False,
    "disks": [{"path": "/var/lib/images/db.qcow2", "format": "qcow2", "cache": "writeback"},
              {"path": "/dev/vg/data", "shared": True, "readonly": True, "cache": "directsync"}],
    "nics": [{"bridge": "br0", "mac": "52:54:00:ab:cd:ef", "model": "e1000"}, {"bridge": "br1"}]}))
reset("agent-config")
put("agent-config", "full", json.dumps({
    "host": "host-a", "state_dir": "/var/lib/drover/agent", "run_dir": "/run/drover/agent",
    "listen": ["unix:/run/drover/agent.sock", "10.0.0.1:7400", "[::1]:7401"],
    "qemu_binary": "/usr/bin/qemu-system-x86_64", "accel": "kvm",
    "tls": {"cert": "/etc/drover/a.crt", "key": "/etc/drover/a.key", "ca": "/etc/drover/ca.crt"},
    "dev_mode": False, "job_timeout_ms": 30000, "qmp_timeout_ms": 10000, "qga_timeout_ms": 5000,
    "start_timeout_ms": 10000, "finish_ask_ms": 300000, "max_guests": 512,
    "rpc_lanes": {"queries": 4, "peer": 16, "control": 8, "streams": 16},
    "max_request_bytes": 4194304, "log_level": "info"}))
put("agent-config", "dev", '{"listen": ["127.0.0.1:7400"], "dev_mode": true, "accel": "tcg"}\n'
    'dev_mode=true\nlisten=unix:/tmp/a.sock,localhost:1\ntls.cert=/x\nmax_guests=9\n')
reset("coord-config")
put("coord-config", "full", json.dumps({
    "listen": ["unix:/run/drover/coordinator.sock", "10.0.0.10:7500"], "dev_mode": True,
    "db": "/var/lib/drover/coordinator.db", "max_outgoing": 2, "max_incoming": 2, "cluster_limit": 8,
    "default_link_bytes_per_s": 125000000, "stream_bytes_per_s": 400000000, "heartbeat_ms": 2000,
    "log_level": "info", "rpc_lanes": {"queries": 4, "control": 4, "streams": 8},
    "job_retention_days": 30, "job_retention_count": 1000,
    "hosts": [{"name": "host-a", "address": "10.0.0.1:7400", "migration_address": "10.1.0.1",
               "memory_mib": 65536, "vcpus": 64, "cpu_model": "qemu64", "link_bytes_per_s": 125000000,
               "max_outgoing": 2, "max_incoming": 2},
              {"name": "host-b", "address": "10.0.0.2:7400", "memory_mib": 1024, "vcpus": 32}],
    "anti_affinity": {"db": ["db1", "db2"]},
    "defaults": {"downtime_ms": 300, "max_downtime_ms": 2000, "postcopy": "never"}}))

reset("status")
put("status", "migrating", json.dumps({
    "format": "drover-vm-status", "version": 1, "name": "vm1",
    "uuid": "8b5c1f0e-1a2b-4c3d-9e8f-0123456789ab", "state": "running", "reason": "migration",
    "pid": 4242, "pid_start_time": 123456, "qmp_socket": "/run/drover/agent/vm1.qmp",
    "qga_socket": "/run/drover/agent/vm1.qga",
    "definition": {"name": "vm1", "memory_mib": 128, "kernel": "/boot/vmlinuz"},
    "job": {"async": "migration-out", "phase": "perform", "op": "host-a-1-0000abcd"},
    "migration": {"peer": "host-b", "uri": "tcp:10.1.0.2:49152", "postcopy_started": False,
                  "orig_caps": 0, "orig_params": {"max-bandwidth": 134217728, "downtime-limit": 300}},
    "extra": {"k": 1}}))
put("status", "shutoff", '{"format": "drover-vm-status", "version": 1, "name": "vm2", '
    '"uuid": "00000000-0000-4000-8000-000000000001", "state": "shutoff", "reason": "unknown", "pid": 0}')

# ---- protobuf: the Agent's requests, droverctl's replies -----------------
tmp = tempfile.mkdtemp()
try:
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I" + os.path.join(root, "proto"),
                           "--python_out=" + tmp, "drover/v1/agent.proto", "drover/v1/coordinator.proto"])
    sys.path.insert(0, tmp)
    from drover.v1 import agent_pb2, coordinator_pb2


    reset("agent-rpc")
    svc = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
    # the handler table's order (agent/agent-rpc.c agent_methods)
    table = ["Define", "Undefine", "Start", "Shutdown", "Destroy", "Suspend", "Resume", "ListGuests", "GetGuest",
             "WatchEvents", "GuestPing", "GuestInfo", "GuestSetTime", "GuestGetTime", "GetAgentStats",
             "GetOperation", "WatchOperation", "Migrate", "MigrateAbort", "MigrateTune", "MigrateStartPostcopy",
             "WatchMigration", "GetMigration", "MigrateRecoverNow", "MigratePrepare", "MigrateFinish", "MigrateCancel",
             "MigrationOwner", "MigrateRecover"]
    for i, name in enumerate(table):
        m = agent_pb2.__dict__[svc.methods_by_name[name].input_type.name]()
        for f in m.DESCRIPTOR.fields:
            if f.type == f.TYPE_STRING and f.label != f.LABEL_REPEATED:
                v = {"guest": "g1", "name": "g1", "op_id": "op-1", "id": "op-1",
                     "json": '{"name": "g2", "memory_mib": 64, "kernel": "/boot/vmlinuz"}'}.get(f.name, "x")
                setattr(m, f.name, v)
        put("agent-rpc", "%02d-%s" % (i, name), bytes([i]) + m.SerializeToString())

    reset("droverctl")
    C = coordinator_pb2
    st = C.Subtask(guest="db-1", source="host-a", destination="host-b", phase=C.SubtaskPhase.Value("SUBTASK_PHASE_MIGRATING"),
                   migration_phase="active", stats=C.Subtask.DESCRIPTOR.fields_by_name["stats"].message_type._concrete_class(
                       ram_total_bytes=1 << 30, ram_remaining_bytes=1 << 20, mbps=900.0, iteration=3)) \
        if "stats" in C.Subtask.DESCRIPTOR.fields_by_name else C.Subtask(guest="db-1")
    done = C.Subtask(guest="web-1", source="host-a", destination="host-c",
                     phase=C.SubtaskPhase.Value("SUBTASK_PHASE_SUCCEEDED"), downtime_ms=40, transferred_bytes=3 << 30)
    job = C.Job(id="job-1", kind=C.JobKind.Value("JOB_KIND_EVACUATE"), phase=C.JobPhase.Value("JOB_PHASE_RUNNING"),
                host="host-a", created_unix_ms=1700000000000, subtasks=[st, done],
                history=[C.JobEvent(time_unix_ms=1700000000001, text="started")] if hasattr(C, "JobEvent") else [])
    jb = job.SerializeToString()
    hosts = C.ListHostsResponse(hosts=[C.Host(name="host-a", address="10.0.0.1:7400", memory_mib=4096,
                                              memory_used_mib=1024, vcpus=32, vcpus_used=4, guests=2, cpu_model="qemu64")])
    guests = C.ListGuestsClusterResponse(guests=[C.ClusterGuest(name="db-1", uuid="u", host="host-a", memory_mib=128, vcpus=1),
                                                 C.ClusterGuest(name="zz", unmanaged=True)])
    jobs = C.ListJobsResponse(jobs=[job])
    plan = C.JobResponse(job=C.Job(id="job-2"), plan=C.Plan(moves=[C.PlanEntry(guest="db-1", source="a", destination="b",
                                                                                 estimated_s=1.5, reason="fits")],
                                                             blocked=[C.PlanEntry(guest="x", reason="no room")],
                                                             estimated_makespan_s=2.0))
    for flags, name, body in [(0, "hosts", hosts.SerializeToString()), (8 | 1, "vms-json", guests.SerializeToString()),
                              (2, "jobs", jobs.SerializeToString()), (8 | 2, "jobs-json", jobs.SerializeToString()),
                              (3, "job", jb), (8 | 4, "cancel-json", jb),
                              (5, "watch", len(jb).to_bytes(2, "big") + jb + len(jb).to_bytes(2, "big") + jb),
                              (6, "migrate", plan.SerializeToString()), (8 | 6, "migrate-json", plan.SerializeToString()),
                              (7, "render", jb)]:
        put("droverctl", name, bytes([flags]) + body)
finally:
    shutil.rmtree(tmp)
