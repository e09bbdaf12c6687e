#!/usr/bin/env python3
"""certkeeper's benchmarks, against autodns-sim on loopback. One command:

    python3 bench/run.py            # everything (about 25 minutes, 10 of them the rate-limited runs)
    python3 bench/run.py cpu noop   # only some: scale, peer, floor, features, cpu, rss, noop, ratelimit, ratelimit40, campaign, campaign40, dnslag, idle
    BENCH_BINARIES=DIR python3 bench/run.py ratelimit40   # another build's binaries, not built here

It builds the release binaries, starts autodns-sim (job delay 0) as a child process, writes
configs into a temporary directory, runs certkeeper as child processes under GNU time (CPU and
peak RSS) and reads the daemon's from /proc. Every process it starts is stopped by its PID.
Results are printed and merged into bench/results.json.
"""

import atexit
import calendar
import resource
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import ssl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
# BENCH_BINARIES: a directory holding the certkeeper and autodns-sim binaries of another build
# (e.g. an earlier commit's, to compare with); nothing is built then.
BINARIES = os.environ.get("BENCH_BINARIES")
CERTKEEPER = os.path.join(BINARIES or os.path.join(TARGET, "release"), "certkeeper")
SIM = os.path.join(BINARIES or os.path.join(TARGET, "release"), "autodns-sim")
RUNS = 5
results = {}


def build():
    if BINARIES:
        return
    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)


def run(args, env=None, cwd=None):
    """Runs a command to its end under GNU time; returns (seconds, cpu seconds, peak RSS in KiB,
    stdout, stderr). (wait4's ru_maxrss would count the forked harness before exec.)"""
    start = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "BENCH %e %U %S %M", *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"{args} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    lines = p.stderr.rstrip("\n").split("\n")
    _, _, user, system, maxrss = lines[-1].split()
    return wall, float(user) + float(system), int(maxrss), p.stdout, "\n".join(lines[:-1])


# Every server the harness starts, stopped by its PID when the harness exits, also when a
# measured command failed (`sys.exit`) halfway through a benchmark.
STARTED = []


@atexit.register
def stop_started():
    for p in STARTED:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Sim:
    """autodns-sim as a child process, stopped by its PID."""

    def __init__(self, *flags):
        self.p = subprocess.Popen([SIM, *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        STARTED.append(self.p)
        self.ready = json.loads(self.p.stdout.readline())
        self.ctx = ssl.create_default_context(cafile=self.ready["ca_file"])

    def get(self, path):
        with urllib.request.urlopen(self.ready["sim"] + path, context=self.ctx) as r:
            return json.load(r)

    def post(self, path, body):
        req = urllib.request.Request(self.ready["sim"] + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx) as r:
            return json.load(r)

    def stop(self):
        os.kill(self.p.pid, signal.SIGTERM)
        self.p.wait(timeout=10)


def workdir(sim, names, key="ecdsa-p256", extra="", api_rate=1000.0, poll="50ms", dns="autodns", base=None):
    d = tempfile.mkdtemp(prefix="certkeeper-bench-", dir=base)
    with open(os.path.join(d, "api-password"), "w") as f:
        f.write("demo-password\n")
    os.chmod(os.path.join(d, "api-password"), 0o600)
    host, port = sim.ready["dns"].rsplit(":", 1)
    lines = [
        "[api]",
        f'url = "{sim.ready["api"]}"',
        'user = "demo"',
        "context = 4",
        'password_file = "api-password"',
        f'ca_file = "{sim.ready["ca_file"]}"',
        f"rate_limit = {api_rate}",
        "[store]",
        'state_dir = "state"',
        'live_dir = "live"',
        "[dns]",
        f'resolvers = ["{sim.ready["dns"]}"]',
        f"nameserver_port = {port}",
        "[order]",
        f'poll_interval = "{poll}"',
        'poll_interval_max = "1s"',
        "[defaults]",
        "admin_contact = 100",
        "technical_contact = 100",
        f'key = "{key}"',
        f'dns = "{dns}"',
        extra,
    ]
    for n in names:
        lines += ["[[certificate]]", f'name = "{n}"']
    with open(os.path.join(d, "certkeeper.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return d


def contact(sim):
    """Creates contact 100 through the API, as a user would once."""
    req = urllib.request.Request(
        sim.ready["api"] + "/sslcontact",
        data=json.dumps({"fname": "Bench", "lname": "Mark", "email": "b@example.com", "phone": "+49-1-1"}).encode(),
        headers={"Content-Type": "application/json", "X-Domainrobot-Context": "4", "User-Agent": "bench", "Authorization": "Basic ZGVtbzpkZW1vLXBhc3N3b3Jk"},
    )
    with urllib.request.urlopen(req, context=sim.ctx) as r:
        assert json.load(r)["data"][0]["id"] == 100


def ck(d, *args):
    env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(d, "certkeeper.toml"), CERTKEEPER_LOG="warn")
    env.pop("RUST_BACKTRACE", None)
    return run([CERTKEEPER, *args], env=env, cwd=d)


def names(n, zone="example.com"):
    return [f"c{i}.{zone}" for i in range(n)]


def fabricate(d, n, not_after_days=150, generations=3):
    """State files of n installed certificates, none due (for the no-op, RSS and idle runs), and
    the live directory an installed host has: `generations` generations each (the files are
    placeholders; nothing reads their contents when nothing is due), the last one live."""
    now = int(time.time())
    os.makedirs(os.path.join(d, "state", "certs"), exist_ok=True)
    os.makedirs(os.path.join(d, "live", ".generations"), exist_ok=True)
    for name in names(n):
        st = {"version": 1, "name": name, "certificate_id": 1, "term_end": now + 360 * 86400, "serial": "01",
              "not_before": now - 10 * 86400, "not_after": now + not_after_days * 86400, "generation": generations,
              "deployed": True}
        with open(os.path.join(d, "state", "certs", name + ".json"), "w") as f:
            json.dump(st, f)
        for g in range(1, generations + 1):
            gd = os.path.join(d, "live", ".generations", name, f"{g:04}")
            os.makedirs(gd)
            for file, mode in [("privkey.pem", 0o600), ("cert.pem", 0o644), ("chain.pem", 0o644), ("fullchain.pem", 0o644)]:
                fd = os.open(os.path.join(gd, file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                os.write(fd, b"placeholder\n")
                os.close(fd)
        os.symlink(os.path.join(".generations", name, f"{generations:04}"), os.path.join(d, "live", name))


def bench_cpu():
    sim = Sim("--rate-limit", "0")
    contact(sim)
    for key in ["ecdsa-p256", "rsa-2048"]:
        d = workdir(sim, names(100), key=key)
        ck(d, "run", "--once")  # creates the 100 orders
        before = len(sim.get("/requests"))
        walls, cpus, rss = [], [], []
        for _ in range(RUNS):
            wall, cpu, maxrss, _, _ = ck(d, "--renew-now")
            walls.append(wall * 1000 / 100), cpus.append(cpu * 1000 / 100), rss.append(maxrss)
        calls = (len(sim.get("/requests")) - before) / (100 * RUNS)
        one_wall, one_cpu, one_rss = [], [], []
        for name in names(100):
            wall, cpu, maxrss, _, _ = ck(d, "--renew-now", name)
            one_wall.append(wall * 1000), one_cpu.append(cpu * 1000), one_rss.append(maxrss)
        # The same with the binary read from disk again (page cache dropped), as after a reboot:
        # the kernel then maps its code in smaller pieces than right after the build wrote it.
        cold_rss = []
        for name in names(RUNS):
            drop_from_page_cache(CERTKEEPER)
            cold_rss.append(ck(d, "--renew-now", name)[2])
        results[f"cpu_{key}"] = {
            "one_run_100": {"cpu_ms_per_cert": statistics.median(cpus), "wall_ms_per_cert": statistics.median(walls), "peak_rss_kib": max(rss)},
            "process_per_cert": {"cpu_ms_per_cert": statistics.median(one_cpu), "wall_ms_per_cert": statistics.median(one_wall), "peak_rss_kib": max(one_rss),
                                 "peak_rss_kib_median": statistics.median(one_rss), "peak_rss_kib_binary_not_cached": max(cold_rss)},
            "api_calls_per_issuance": calls,
        }
        print(key, json.dumps(results[f"cpu_{key}"]), flush=True)
    sim.stop()


def drop_from_page_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_noop():
    sim = Sim("--rate-limit", "0")
    d = workdir(sim, names(10000))
    fabricate(d, 10000)
    walls, cpus, rss = [], [], []
    for _ in range(RUNS):
        wall, cpu, maxrss, _, _ = ck(d, "run", "--once")
        walls.append(wall * 1000), cpus.append(cpu * 1000), rss.append(maxrss)
    assert not sim.get("/requests"), "a no-op run must not call the API"
    results["noop_10000"] = {"wall_ms": statistics.median(walls), "cpu_ms": statistics.median(cpus), "peak_rss_kib": max(rss)}
    print("noop", json.dumps(results["noop_10000"]), flush=True)
    sim.stop()


def daemon_rss_and_cpu(n, seconds):
    """Starts the daemon over n installed certificates, stops it after `seconds`; returns (VmHWM KiB, cpu s)."""
    sim = Sim("--rate-limit", "0")
    d = workdir(sim, names(n))
    fabricate(d, n)
    env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(d, "certkeeper.toml"), CERTKEEPER_LOG="warn")
    p = subprocess.Popen([CERTKEEPER, "run"], env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(p)
    time.sleep(seconds)
    hwm = 0
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    os.kill(p.pid, signal.SIGTERM)
    _, _, ru = os.wait4(p.pid, 0)
    assert not sim.get("/requests"), "nothing was due"
    sim.stop()
    return hwm, ru.ru_utime + ru.ru_stime


def bench_rss():
    for n in [1000, 10000]:
        hwm = statistics.median([daemon_rss_and_cpu(n, 5)[0] for _ in range(3)])
        results[f"daemon_rss_{n}"] = {"peak_rss_kib": hwm}
        print("daemon", n, hwm, flush=True)


def bench_idle():
    # The idle cost is the difference between a daemon that ran 65 s and one that ran 5 s.
    short = statistics.median([daemon_rss_and_cpu(1000, 5)[1] for _ in range(3)])
    long = statistics.median([daemon_rss_and_cpu(1000, 65)[1] for _ in range(3)])
    results["idle_1000"] = {"cpu_ms_per_minute": (long - short) * 1000, "startup_cpu_ms": short * 1000}
    print("idle", json.dumps(results["idle_1000"]), flush=True)


def ratelimit_run(n):
    """n certificates in one run, 8 in flight (the default concurrency), certkeeper and the
    simulator both at the API's limit of 3 requests per second."""
    sim = Sim()  # the API's own limit: 3 requests per second
    contact(sim)
    time.sleep(1)
    d = workdir(sim, names(n), api_rate=3.0)
    before = len(sim.get("/requests"))
    wall, cpu, _, _, _ = ck(d, "run", "--once")
    reqs = sim.get("/requests")[before:]
    sim.stop()
    limited = sum(1 for r in reqs if r["status"] == 429)
    calls = len(reqs)
    bound = calls / 3.0
    route = lambda method, prefix: sum(1 for r in reqs if r["method"] == method and r["path"].startswith(prefix))
    return {"certificates": n, "wall_s": wall, "calls": calls, "calls_per_issuance": calls / n, "lower_bound_s": bound,
            "over_bound_pct": (wall / bound - 1) * 100, "answered_429": limited,
            "get_poll": route("GET", "/v1/poll"), "put_poll": route("PUT", "/v1/poll/"), "get_job": route("GET", "/v1/job/")}


def bench_ratelimit():
    results["ratelimit_300"] = ratelimit_run(300)
    print("ratelimit", json.dumps(results["ratelimit_300"]), flush=True)


def bench_ratelimit40():
    """The rate-limited run in small: 40 certificates, 8 in flight, about 70 s."""
    results["ratelimit_40"] = ratelimit_run(40)
    print("ratelimit40", json.dumps(results["ratelimit_40"]), flush=True)


def bench_dnslag():
    """Hook mode: the hook asks the simulator to publish the record 1 to 3 s later (at random, so
    that the check rounds do not line up with it) and notes when; the
    lag is from then to certkeeper's log line saying every authoritative server serves it.
    Measured with the old default check interval (2 s) and the current one (250 ms)."""
    sim = Sim("--rate-limit", "0")
    contact(sim)
    for interval in ["2s", "250ms"]:
        lags = dnslag_runs(sim, interval)
        results[f"dns_lag_{interval}"] = {"median_s": statistics.median(lags), "max_s": max(lags), "samples": len(lags)}
        print("dnslag", interval, json.dumps(results[f"dns_lag_{interval}"]), flush=True)
    sim.stop()


def dnslag_runs(sim, interval):
    lags = []
    for i in range(RUNS * 2):
        name = f"lag{i}-{interval}.example.net"
        d = tempfile.mkdtemp(prefix="certkeeper-bench-hook-")
        hook = os.path.join(d, "hook.py")
        with open(hook, "w") as f:
            f.write(f"""#!/usr/bin/env python3
import json, os, random, ssl, sys, time, urllib.request
if sys.argv[-1] != "present":
    sys.exit(0)
ctx = ssl.create_default_context(cafile={sim.ready["ca_file"]!r})
delay = 1.0 + random.random() * 2.0
body = {{"action": "add", "name": os.environ["CERTKEEPER_RECORD_NAME"], "value": os.environ["CERTKEEPER_RECORD_VALUE"], "delay": delay}}
req = urllib.request.Request({sim.ready["sim"]!r} + "/dns", data=json.dumps(body).encode(), headers={{"Content-Type": "application/json"}})
urllib.request.urlopen(req, context=ctx).read()
with open({os.path.join(d, "visible_at")!r}, "w") as out:
    out.write(repr(time.time() + delay))
""")
        os.chmod(hook, 0o755)
        d2 = workdir(sim, [name], dns="hook", extra=f'dns_hook = ["{hook}"]')
        with open(os.path.join(d2, "certkeeper.toml")) as f:
            text = f.read().replace("[dns]\n", f'[dns]\ncheck_interval = "{interval}"\n')
        with open(os.path.join(d2, "certkeeper.toml"), "w") as f:
            f.write(text)
        env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(d2, "certkeeper.toml"), CERTKEEPER_LOG="info")
        p = subprocess.run([CERTKEEPER, "--log-format", "json", "run", "--once"], env=env, cwd=d2, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        visible = float(open(os.path.join(d, "visible_at")).read())
        for line in p.stderr.splitlines():
            if "every authoritative nameserver serves" in line:
                ts = json.loads(line)["timestamp"]
                noticed = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0." + ts[20:26])
                lags.append(noticed - visible)
    return lags


def text_rodata(binary):
    """Bytes of code and read-only data (what the kernel maps from the binary), from size -A."""
    out = subprocess.run(["size", "-A", binary], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.split()[:1] in ([".text"], [".rodata"]))


def bench_features():
    """The default build (with `certkeeper demo`, which embeds the simulator) against one built
    with --no-default-features: code size, and the one-shot peak RSS of one P-256 certificate."""
    global CERTKEEPER
    nodemo_target = os.path.join(TARGET, "nodemo")
    subprocess.run(["cargo", "build", "--release", "--no-default-features", "-p", "certkeeper",
                    "--target-dir", nodemo_target], cwd=ROOT, check=True)
    builds = {"default": CERTKEEPER, "no_default_features": os.path.join(nodemo_target, "release", "certkeeper")}
    sim = Sim("--rate-limit", "0")
    contact(sim)
    d = workdir(sim, names(20))
    ck(d, "run", "--once")
    default_binary = CERTKEEPER
    for label, binary in builds.items():
        CERTKEEPER = binary
        rss = [ck(d, "--renew-now", name)[2] for name in names(20)]
        results[f"features_{label}"] = {"text_rodata_bytes": text_rodata(binary), "binary_bytes": os.path.getsize(binary),
                                         "one_shot_peak_rss_kib_median": statistics.median(rss), "one_shot_peak_rss_kib_max": max(rss)}
        print(label, json.dumps(results[f"features_{label}"]), flush=True)
    CERTKEEPER = default_binary
    sim.stop()


def child_cpu_ms(args, env=None, cwd=None):
    """Runs one process to its end; returns its CPU (user + system) in ms, from getrusage at
    microsecond resolution (GNU time's is 10 ms)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{args} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pebble(d):
    """Debian's pebble (installed with apt-get where it or lego is missing) on loopback,
    validation free (PEBBLE_VA_ALWAYS_VALID=1, as the simulator's is), with a P-256 TLS
    certificate made in `d`. Returns (pebble's process, lego's argv for a name and a --path,
    lego's environment)."""
    missing = [p for p, b in [("lego", "/usr/bin/lego"), ("pebble", "/usr/bin/pebble")] if not os.path.exists(b)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    acme, mgmt, http = free_port(), free_port(), free_port()
    with open(f"{d}/pebble.json", "w") as f:
        json.dump({"pebble": {"listenAddress": f"127.0.0.1:{acme}", "managementListenAddress": f"127.0.0.1:{mgmt}",
                              "certificate": f"{d}/cert.pem", "privateKey": f"{d}/key.pem", "httpPort": http, "tlsPort": free_port(),
                              "ocspResponderURL": "", "externalAccountBindingRequired": False}}, f)
    pebble_env = dict(os.environ, PEBBLE_VA_ALWAYS_VALID="1", PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    pebble = subprocess.Popen(["pebble", "-config", f"{d}/pebble.json"], env=pebble_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(pebble)
    import socket
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", acme), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    lego_env = dict(os.environ, LEGO_CA_CERTIFICATES=f"{d}/cert.pem")
    lego = lambda name, path: ["lego", "--server", f"https://127.0.0.1:{acme}/dir", "--email", "bench@example.com", "--accept-tos",
                               "--key-type", "ec256", "--domains", name, "--http", "--http.port", f"127.0.0.1:{http}",
                               "--path", path, "run"]
    return pebble, lego, lego_env


def stop_pebble(pebble):
    pebble.send_signal(signal.SIGTERM)
    pebble.wait(timeout=10)


def lego_version():
    return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "lego"], capture_output=True, text=True).stdout


def bench_peer(n=40):
    """One process per P-256 certificate, both validated for free: lego (Debian's package)
    against pebble (Debian's, PEBBLE_VA_ALWAYS_VALID=1) and certkeeper against autodns-sim,
    taken in turns in one run so that both see the same machine. The packages are installed
    with apt-get where they are missing."""
    d = tempfile.mkdtemp(prefix="certkeeper-bench-peer-")
    pebble, lego, lego_env = start_pebble(d)
    try:
        child_cpu_ms(lego("account.example.com", f"{d}/lego"), env=lego_env)  # the ACME account, once
        sim = Sim("--rate-limit", "0")
        contact(sim)
        w = workdir(sim, names(n))
        ck(w, "run", "--once")  # the orders, once
        env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(w, "certkeeper.toml"), CERTKEEPER_LOG="warn")
        lego_ms, ck_ms = [], []
        for name in names(n):
            lego_ms.append(child_cpu_ms(lego(name, f"{d}/lego"), env=lego_env))
            ck_ms.append(child_cpu_ms([CERTKEEPER, "--renew-now", name], env=env, cwd=w))
        sim.stop()
    finally:
        stop_pebble(pebble)
    lego_med, ck_med = statistics.median(lego_ms), statistics.median(ck_ms)
    results["peer_lego_p256_process_per_cert"] = {
        "certificates": n, "lego_cpu_ms_median": lego_med, "certkeeper_cpu_ms_median": ck_med,
        "lego_over_certkeeper": lego_med / ck_med, "lego_version": lego_version(),
    }
    print("peer", json.dumps(results["peer_lego_p256_process_per_cert"]), flush=True)


def bench_floor(n=40, runs=3):
    """What the one-shot and the 100-certificate runs cost with no disk work at all, next to the
    same runs on the disk and lego in the same session: every file of a second work directory
    (config, state, live) on tmpfs (/dev/shm), where fsync, file creation and rename cost next to
    nothing; lego likewise with its --path on the disk and on tmpfs; and the cost of starting the
    binary (`certkeeper --version`) and of /bin/true. One process per P-256 certificate for n
    certificates, each kind in turns; 100 certificates in one `--renew-now` run, runs times each.
    CPU (user + system) from getrusage."""
    d = tempfile.mkdtemp(prefix="certkeeper-bench-floor-")
    shm = tempfile.mkdtemp(prefix="certkeeper-bench-floor-", dir="/dev/shm")
    pebble, lego, lego_env = start_pebble(d)
    sim = Sim("--rate-limit", "0")
    try:
        for path in [f"{d}/lego", f"{shm}/lego"]:
            child_cpu_ms(lego("account.example.com", path), env=lego_env)  # the ACME accounts, once
        contact(sim)
        dirs = {"disk": workdir(sim, names(n)), "tmpfs": workdir(sim, names(n), base=shm)}
        envs = {}
        for k, w in dirs.items():
            ck(w, "run", "--once")  # the orders, once
            envs[k] = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(w, "certkeeper.toml"), CERTKEEPER_LOG="warn")
            envs[k].pop("RUST_BACKTRACE", None)
        kinds = {
            "lego_disk": lambda name: child_cpu_ms(lego(name, f"{d}/lego"), env=lego_env),
            "lego_tmpfs": lambda name: child_cpu_ms(lego(name, f"{shm}/lego"), env=lego_env),
            "certkeeper_disk": lambda name: child_cpu_ms([CERTKEEPER, "--renew-now", name], env=envs["disk"], cwd=dirs["disk"]),
            "certkeeper_tmpfs": lambda name: child_cpu_ms([CERTKEEPER, "--renew-now", name], env=envs["tmpfs"], cwd=dirs["tmpfs"]),
            "certkeeper_version": lambda name: child_cpu_ms([CERTKEEPER, "--version"]),
            "bin_true": lambda name: child_cpu_ms(["/bin/true"]),
        }
        ms = {k: [] for k in kinds}
        for name in names(n):
            for k, f in kinds.items():
                ms[k].append(f(name))
        one = {f"{k}_cpu_ms_median": statistics.median(v) for k, v in ms.items()}
        one["lego_over_certkeeper_disk"] = one["lego_disk_cpu_ms_median"] / one["certkeeper_disk_cpu_ms_median"]
        one["lego_over_certkeeper_tmpfs"] = one["lego_disk_cpu_ms_median"] / one["certkeeper_tmpfs_cpu_ms_median"]
        hundred = {"disk": workdir(sim, names(100)), "tmpfs": workdir(sim, names(100), base=shm)}
        per_cert = {k: [] for k in hundred}
        for w in hundred.values():
            ck(w, "run", "--once")
        for _ in range(runs):
            for k, w in hundred.items():
                env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(w, "certkeeper.toml"), CERTKEEPER_LOG="warn")
                env.pop("RUST_BACKTRACE", None)
                per_cert[k].append(child_cpu_ms([CERTKEEPER, "--renew-now"], env=env, cwd=w) / 100)
    finally:
        sim.stop()
        stop_pebble(pebble)
        shutil.rmtree(shm, ignore_errors=True)
    results["floor_p256"] = {
        "certificates": n, "process_per_cert": one,
        "one_run_100": {f"certkeeper_{k}_cpu_ms_per_cert_median": statistics.median(v) for k, v in per_cert.items()},
        "lego_version": lego_version(),
    }
    print("floor", json.dumps(results["floor_p256"]), flush=True)


def cpu_of(pid):
    """CPU seconds of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_scale(n=100000):
    """n installed certificates, none due (state files and three generations each, written by
    the harness): a no-op `run --once`; the daemon's start-up to its first sleep (its CPU stops
    growing), its peak RSS, its CPU over the next idle minute, and how long after an edit of the
    config file it logs the reload."""
    sim = Sim("--rate-limit", "0")
    # BENCH_SCALE_DIR: a directory an earlier scale run fabricated (writing 1.2 million files
    # takes minutes); its config may name an earlier simulator, which a no-op never calls.
    d = os.environ.get("BENCH_SCALE_DIR")
    if d:
        path = os.path.join(d, "certkeeper.toml")
        lines = open(path).read().split("\n")
        lines = [f'ca_file = "{sim.ready["ca_file"]}"' if l.startswith("ca_file =") else
                 f'url = "{sim.ready["api"]}"' if l.startswith("url =") else l for l in lines if not l.startswith("# an edit")]
        open(path, "w").write("\n".join(lines))
    else:
        d = workdir(sim, names(n))
        fabricate(d, n)
    walls, cpus = [], []
    for _ in range(3):
        wall, cpu, _, _, _ = ck(d, "run", "--once")
        walls.append(wall * 1000), cpus.append(cpu * 1000)
    log = os.path.join(d, "daemon.log")
    env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(d, "certkeeper.toml"), CERTKEEPER_LOG="info")
    start = time.monotonic()
    with open(log, "w") as out:
        p = subprocess.Popen([CERTKEEPER, "run"], env=env, cwd=d, stdout=out, stderr=out)
    STARTED.append(p)
    last, last_change = -1.0, start
    while time.monotonic() - last_change < 2.0 and time.monotonic() - start < 120:
        c = cpu_of(p.pid)
        if c != last:
            last, last_change = c, time.monotonic()
        time.sleep(0.05)
    startup = last_change - start
    idle_from = cpu_of(p.pid)
    time.sleep(60)
    idle = cpu_of(p.pid) - idle_from
    with open(f"/proc/{p.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    def edit():
        """Appends a comment to the config; returns how long the daemon took to log the reload."""
        seen = open(log).read().count("configuration reloaded")
        with open(os.path.join(d, "certkeeper.toml"), "a") as f:
            f.write("# an edit\n")
        edited = time.monotonic()
        while time.monotonic() - edited < 60:
            if open(log).read().count("configuration reloaded") > seen:
                return time.monotonic() - edited
            time.sleep(0.05)
        return None

    def peak():
        with open(f"/proc/{p.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))

    noticed = edit()
    time.sleep(2)
    after_one = peak()
    for _ in range(4):
        edit()
        time.sleep(2)
    after_five = peak()
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=30)
    assert not sim.get("/requests"), "nothing was due"
    sim.stop()
    results[f"scale_{n}"] = {"noop_run_once_wall_ms": statistics.median(walls), "noop_run_once_cpu_ms": statistics.median(cpus),
                             "daemon_startup_s": startup, "daemon_peak_rss_kib": hwm, "daemon_idle_cpu_ms_per_minute": idle * 1000,
                             "config_change_noticed_s": noticed, "daemon_peak_rss_after_1_reload_kib": after_one,
                             "daemon_peak_rss_after_5_reloads_kib": after_five}
    print("scale", json.dumps(results[f"scale_{n}"]), flush=True)


def campaign_run(n, kills=2):
    """A campaign (`--renew-now --all`) of n certificates at the API's 3 requests/s, killed with
    SIGKILL (by PID) `kills` times at even shares of its work and resumed each time by the same
    command. Returns the time certkeeper ran (the segments' sum) beside the rate limit's bound
    (its API calls / 3), and how often each certificate was reissued."""
    sim = Sim("--rate-limit", "0")
    contact(sim)
    d = workdir(sim, names(n))
    ck(d, "run", "--once")  # every certificate issued, without the rate limit
    sim.post("/faults", {"rate_limit": 3.0})
    conf = os.path.join(d, "certkeeper.toml")
    text = open(conf).read().replace("rate_limit = 1000.0", "rate_limit = 3.0")
    open(conf, "w").write(text)
    time.sleep(1)
    before = len(sim.get("/requests"))
    env = dict(os.environ, CERTKEEPER_CONFIG=conf, CERTKEEPER_LOG="warn")
    log = os.path.join(d, "state", "campaign.log")

    def ended():
        try:
            return sum(1 for l in open(log) if l.startswith(("done\t", "failed\t")))
        except FileNotFoundError:
            return 0

    segments = []
    for k in range(kills + 1):
        start = time.monotonic()
        p = subprocess.Popen([CERTKEEPER, "--renew-now", "--all"], env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(p)
        if k < kills:
            while ended() < n * (k + 1) // (kills + 1):
                time.sleep(0.05)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        else:
            assert p.wait() == 0, "the last segment failed"
        segments.append(time.monotonic() - start)
    reqs = sim.get("/requests")[before:]
    ledger = sim.get("/ledger")
    sim.stop()
    reissues = {}
    for e in ledger:
        if e["kind"] == "reissue":
            reissues[e["name"]] = reissues.get(e["name"], 0) + 1
    once = sum(1 for c in names(n) if reissues.get(c) == 1)
    calls = len(reqs)
    bound = calls / 3.0
    total = sum(segments)
    return {"certificates": n, "kills": kills, "segments_s": segments, "wall_s": total, "calls": calls,
            "calls_per_issuance": calls / n, "lower_bound_s": bound, "over_bound_pct": (total / bound - 1) * 100,
            "reissued_exactly_once": once, "answered_429": sum(1 for r in reqs if r["status"] == 429)}


def bench_campaign():
    results["campaign_300_killed_twice"] = campaign_run(300)
    print("campaign", json.dumps(results["campaign_300_killed_twice"]), flush=True)


def bench_campaign40():
    """The campaign in small: 40 certificates, killed twice, about 90 s."""
    results["campaign_40_killed_twice"] = campaign_run(40)
    print("campaign40", json.dumps(results["campaign_40_killed_twice"]), flush=True)


class Etcd:
    """Three etcd members (Debian's etcd-server) on loopback ports, plain HTTP, data in a
    temporary directory, each stopped by its PID."""

    def __init__(self):
        if not os.path.exists("/usr/bin/etcd"):
            subprocess.run(["apt-get", "install", "-y", "etcd-server", "etcd-client"], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        d = tempfile.mkdtemp(prefix="certkeeper-bench-etcd-")
        peers = [free_port() for _ in range(3)]
        clients = [free_port() for _ in range(3)]
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        self.endpoints = [f"http://127.0.0.1:{c}" for c in clients]
        self.procs = []
        for i in range(3):
            p = subprocess.Popen(["/usr/bin/etcd", f"--name=e{i}", f"--data-dir={d}/e{i}",
                                  f"--listen-client-urls={self.endpoints[i]}", f"--advertise-client-urls={self.endpoints[i]}",
                                  f"--listen-peer-urls=http://127.0.0.1:{peers[i]}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peers[i]}",
                                  f"--initial-cluster={initial}", "--initial-cluster-state=new", "--listen-metrics-urls="],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            STARTED.append(p)
            self.procs.append(p)
        for _ in range(150):
            ok = subprocess.run(["/usr/bin/etcdctl", f"--endpoints={','.join(self.endpoints)}", "endpoint", "health"],
                                env=dict(os.environ, ETCDCTL_API="3"), capture_output=True).returncode == 0
            if ok:
                return
            time.sleep(0.2)
        sys.exit("etcd did not become healthy")

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)


def fleet_run(sim, etcd, members, n, prefix, zone):
    """One issuance of n certificates by a fleet of `members` daemons (0: one daemon without
    [cluster]), each with its own state and live directories. Returns the API calls made until
    every member serves every certificate (and 2 s more), and per certificate the time from the
    first member serving it (the leader, which deploys before it publishes) to the last. Each run
    has names of its own (`zone`), so that each is a first order, not an adoption of the last."""
    key = "".join(f"{b:02x}" for b in os.urandom(32))
    procs, dirs = [], []
    for m in range(max(members, 1)):
        d = workdir(sim, names(n, zone))
        conf = os.path.join(d, "certkeeper.toml")
        if members:
            with open(os.path.join(d, "fleet.key"), "w") as f:
                f.write(key + "\n")
            os.chmod(os.path.join(d, "fleet.key"), 0o600)
            eps = ", ".join(f'"{e}"' for e in etcd.endpoints)
            text = open(conf).read().replace("[defaults]", f'[cluster]\nbackend = "etcd"\nendpoints = [{eps}]\nmember = "m{m}"\nfleet_key_file = "fleet.key"\nprefix = "{prefix}"\n[defaults]')
            open(conf, "w").write(text)
        dirs.append(d)
    before = len(sim.get("/requests"))
    start = time.monotonic()
    for d in dirs:
        env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(d, "certkeeper.toml"), CERTKEEPER_LOG="warn")
        p = subprocess.Popen([CERTKEEPER, "run"], env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(p)
        procs.append(p)
    seen = {}  # (member, name) -> when its live symlink appeared
    while len(seen) < len(dirs) * n:
        now = time.monotonic()
        for m, d in enumerate(dirs):
            for name in names(n, zone):
                if (m, name) not in seen and os.path.lexists(os.path.join(d, "live", name)):
                    seen[(m, name)] = now
        if now - start > 300:
            sys.exit(f"fleet of {members}: not every member serves every certificate within 300 s")
        time.sleep(0.01)
    all_served = time.monotonic() - start
    time.sleep(2)
    reqs = sim.get("/requests")[before:]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)
    spread = [max(seen[(m, c)] for m in range(len(dirs))) - min(seen[(m, c)] for m in range(len(dirs))) for c in names(n, zone)]
    kinds = {}
    for r in reqs:
        route = r["method"] + " " + "/".join(x if not x.isdigit() else "N" for x in r["path"].split("?")[0].split("/")[:4])
        kinds[route] = kinds.get(route, 0) + 1
    return len(reqs), spread, all_served, kinds


def bench_fleet(n=20, runs=3):
    """API calls per issuance for one daemon without [cluster], a fleet of 1 and a fleet of 3
    (Debian's etcd, 3 members, on loopback), `runs` times each with n certificates; and, for the
    fleet of 3, the time from the leader serving a certificate to the last member serving it."""
    sim = Sim("--rate-limit", "0")
    contact(sim)
    etcd = Etcd()
    out = {"certificates": n, "runs": runs}
    k = 0
    for members in [0, 1, 3]:
        calls, spreads, walls = [], [], []
        for _ in range(runs):
            k += 1
            c, spread, wall, kinds = fleet_run(sim, etcd, members, n, f"/bench-{k}/", f"run{k}.example.com")
            calls.append(c / n)
            spreads += spread
            walls.append(wall)
        label = "single" if members == 0 else f"fleet_{members}"
        out[f"{label}_calls_per_issuance"] = calls
        out[f"{label}_all_served_s_median"] = statistics.median(walls)
        out[f"{label}_calls_by_route_last_run"] = kinds
        if members == 3:
            out["fleet_3_leader_to_last_member_ms_median"] = statistics.median(spreads) * 1000
            out["fleet_3_leader_to_last_member_ms_max"] = max(spreads) * 1000
    etcd.stop()
    sim.stop()
    results["fleet"] = out
    print("fleet", json.dumps(out), flush=True)


def bench_against(n=40, runs=5):
    """CPU of this build against another's (BENCH_BASELINE: a directory holding its certkeeper
    binary), taken in turns in one run against one simulator: one process per P-256
    certificate (n certificates), and 100 certificates in one `--renew-now` run (runs times)."""
    base = os.environ.get("BENCH_BASELINE")
    if not base:
        sys.exit("against: set BENCH_BASELINE to a directory holding another build's certkeeper")
    bins = {"baseline": os.path.join(base, "certkeeper"), "this": CERTKEEPER}
    sim = Sim("--rate-limit", "0")
    contact(sim)
    out = {}
    for label, count, args in [("process_per_cert", n, None), ("one_run_100", 100, ["--renew-now"])]:
        d = workdir(sim, names(count))
        ck(d, "run", "--once")
        env = dict(os.environ, CERTKEEPER_CONFIG=os.path.join(d, "certkeeper.toml"), CERTKEEPER_LOG="warn")
        ms = {k: [] for k in bins}
        for i in range(n if args is None else runs):
            for k, exe in bins.items():
                if args is None:
                    ms[k].append(child_cpu_ms([exe, "--renew-now", f"c{i}.example.com"], env=env, cwd=d))
                else:
                    ms[k].append(child_cpu_ms([exe, *args], env=env, cwd=d) / count)
        out[label] = {f"{k}_cpu_ms_per_cert": statistics.median(v) for k, v in ms.items()}
    sim.stop()
    results["against_baseline"] = out
    print("against", json.dumps(out), flush=True)


BENCHES = {"scale": bench_scale, "peer": bench_peer, "floor": bench_floor, "features": bench_features, "cpu": bench_cpu, "noop": bench_noop, "rss": bench_rss, "idle": bench_idle, "dnslag": bench_dnslag, "ratelimit": bench_ratelimit, "ratelimit40": bench_ratelimit40, "campaign": bench_campaign, "campaign40": bench_campaign40, "fleet": bench_fleet, "against": bench_against}

if __name__ == "__main__":
    wanted = sys.argv[1:] or [b for b in BENCHES if b != "against"]
    build()
    for w in wanted:
        BENCHES[w]()
    out = os.path.join(ROOT, "bench", "results.json")
    old = json.load(open(out)) if os.path.exists(out) else {}
    old.update(results)
    with open(out, "w") as f:
        json.dump(old, f, indent=2, sort_keys=True)
    print(json.dumps(results, indent=2, sort_keys=True))
