"""Python multiprocessing side of tools/bench: same scenarios, same JSON lines.

    python3 python_anchor.py [--quick] [--suite=pool|actor|all]   (default: all)

pool:  Pool(2) (and Pool(N) start-up), Process, Value/Lock/Queue scenarios (anchor of
       pool_bench.cc).
actor: a Counter served by a multiprocessing Manager and called through its proxy
       (anchor of actor_bench.cc), with the scenario names actor_bench emits, and
       Manager().dict() / .list() operations (anchor of mpx::Manager).
"""
import json
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing.managers import BaseManager
from multiprocessing.pool import ThreadPool


def square(x):
    return x * x


def multiply(x, y):
    return x * y


def nothing():
    pass


def add_one(x):
    return x + 1


def negate(x):
    return -x


def megabyte_strings(n):
    for _ in range(n):
        yield "p" * (1 << 20)


def locked_increments(v, start, n):
    start.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def put_ints(q, start, n):
    start.wait()
    for i in range(n):
        q.put(i)


def two_process_increments(n):
    v = mp.Value("i", 0)
    start = mp.Barrier(3)
    ps = [mp.Process(target=locked_increments, args=(v, start, n)) for _ in range(2)]
    for p in ps:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for p in ps:
        p.join()
    rate = 2 * n / (time.perf_counter() - t0)
    assert v.value == 2 * n, (v.value, 2 * n)
    return rate


def shared_state_scenarios(reps, scale):
    n = int(500_000 * scale)
    emit("Value += 1 under get_lock(), 2 processes", "increments/s",
         [two_process_increments(n) for _ in range(reps)])
    # Python has no atomic add on a shared Value: get_lock() is its only safe way.
    emit("Value += 1, 2 processes: mpx fetch_add vs Python get_lock()", "increments/s",
         [two_process_increments(n) for _ in range(reps)])
    items = int(1_000_000 * scale)
    v = []
    for _ in range(reps):
        q = mp.Queue()
        start = mp.Barrier(2)
        producer = mp.Process(target=put_ints, args=(q, start, items))
        producer.start()
        start.wait()
        t0 = time.perf_counter()
        total = 0
        for _ in range(items):
            total += q.get()
        v.append(items / (time.perf_counter() - t0))
        producer.join()
        assert total == items * (items - 1) // 2
    emit("Queue of small ints, producer process -> consumer", "items/s", v)


# Pool sizes of the "Pool(N) create + first task + teardown" rows (pool_bench's too).
POOL_SIZES = (1, 2, 4, 8, 16, 32)


def emit(scenario, unit, values):
    print(json.dumps({"scenario": scenario, "unit": unit, "values": values}), flush=True)


# --- actors: Manager proxies --------------------------------------------------------
# Python's closest thing to an mpx actor: an object living in a Manager's server
# process (one process per Manager, started with the default start method), called
# through a proxy; each call is a synchronous request/reply on the calling thread's
# connection to the server.


class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n


class CounterManager(BaseManager):
    pass


CounterManager.register("Counter", Counter)


def smaps_rollup_kib(pid, *keys):
    """The sum of these smaps_rollup lines, in KiB, as tools/bench/bench.h reads them."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name = line.split(":", 1)[0] + ":"
            if name in keys:
                total += int(line.split()[1])
    return total


def pss_kib(pid):
    """Proportional set size (bench::pss_kib)."""
    return smaps_rollup_kib(pid, "Pss:")


def uss_kib(pid):
    """Unique set size: the pages only this process maps (bench::uss_kib)."""
    return smaps_rollup_kib(pid, "Private_Clean:", "Private_Dirty:")


# Proxies have no asynchronous call. The closest honest equivalent of "1000 calls in
# flight" is what a Python program would write to overlap calls: a thread pool whose
# threads call the same proxy (a proxy opens one connection per thread, and the
# manager serves each connection on a thread of its own), fed 1,000 apply_async calls
# at a time. At most PIPELINE_THREADS calls are really in flight; more threads do not
# help (both processes hold the GIL): on the 2-core machine 4 measured best among 1-32
# threads, at about the rate of one thread calling in a loop (1 / round trip).
PIPELINE_THREADS = 4


def actor_scenarios(quick):
    reps = 5
    calls = 2000 if quick else 10000
    window, total = 1000, calls * 5
    round_trip, pipelined = [], []
    for _ in range(reps):
        m = CounterManager()
        m.start()
        c = m.Counter(0)
        for _ in range(200):  # warm up, as actor_bench does
            c.add(1)
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter()
            c.add(1)
            lat.append((time.perf_counter() - t0) * 1e6)
        round_trip.append(statistics.median(lat))
        with ThreadPool(PIPELINE_THREADS) as tp:
            tp.map(lambda _: c.add(1), range(PIPELINE_THREADS * 10))  # connect every thread
            t0 = time.perf_counter()
            for _ in range(0, total, window):
                results = [tp.apply_async(c.add, (1,)) for _ in range(window)]
                for r in results:
                    r.get()
            pipelined.append(total / (time.perf_counter() - t0))
        m.shutdown()
    emit("actor call round trip p50", "us", round_trip)
    emit("actor calls, 1000 in flight", "calls/s", pipelined)

    spawn_ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        m = CounterManager()
        m.start()
        m.Counter(0).add(1)
        m.shutdown()  # waits for the server process to exit
        spawn_ms.append((time.perf_counter() - t0) * 1e3)
    emit("actor spawn + first call + stop", "ms", spawn_ms)

    idle = 20 if quick else 100
    memory = []
    for _ in range(1 if quick else 5):
        managers = []
        for _ in range(idle):
            m = CounterManager()
            m.start()
            c = m.Counter(0)
            c.add(1)
            managers.append((m, c))
        # BaseManager has no public pid: _process is its server process.
        total_kib = sum(pss_kib(m._process.pid) for m, _ in managers)
        memory.append(total_kib / idle / 1024.0)
        for m, _ in managers:
            m.shutdown()
    emit("idle actor memory (PSS per actor process)", "MiB", memory)


def append_ints(out, start, n):
    start.wait()
    for i in range(n):
        out.append(i)


def manager_scenarios(quick):
    """The Manager scenarios of actor_bench.cc: one client's d[k] = v and d[k] round
    trips, and two client processes appending to one list."""
    reps = 5
    ops = 2000 if quick else 10000
    per_client = 1000 if quick else 5000
    set_us, get_us, appends = [], [], []
    for _ in range(reps):
        with mp.Manager() as m:
            d = m.dict()
            for i in range(200):
                d["warm"] = i
            lat = []
            for i in range(ops):
                t0 = time.perf_counter()
                d["key-" + str(i % 100)] = i
                lat.append((time.perf_counter() - t0) * 1e6)
            set_us.append(statistics.median(lat))
            lat = []
            total = 0
            for i in range(ops):
                t0 = time.perf_counter()
                total += d["key-" + str(i % 100)]
                lat.append((time.perf_counter() - t0) * 1e6)
            get_us.append(statistics.median(lat))
            out = m.list()
            start = mp.Barrier(3)
            clients = [mp.Process(target=append_ints, args=(out, start, per_client)) for _ in range(2)]
            for p in clients:
                p.start()
            start.wait()
            t0 = time.perf_counter()
            for p in clients:
                p.join()
            appends.append(2 * per_client / (time.perf_counter() - t0))
            assert len(out) == 2 * per_client
    emit("Manager dict d[k] = v round trip p50", "us", set_us)
    emit("Manager dict d[k] round trip p50", "us", get_us)
    emit("Manager list append, 2 client processes", "appends/s", appends)


def main():
    quick = "--quick" in sys.argv
    suite = "all"
    for a in sys.argv[1:]:
        if a.startswith("--suite="):
            suite = a.split("=", 1)[1]
    if suite not in ("pool", "actor", "all"):
        sys.exit(f"python_anchor.py: unknown suite {suite!r} (pool, actor, all)")
    if suite in ("pool", "all"):
        pool_scenarios(quick)
    if suite in ("actor", "all"):
        actor_scenarios(quick)
        manager_scenarios(quick)


def pool_scenarios(quick):
    reps = 3 if quick else 5
    scale = 0.1 if quick else 1.0
    # Start-up scenarios first, while the process is small: fork copies page tables,
    # so measuring them after allocating the big inputs would penalise Python.
    v = []
    for _ in range(reps):
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            p = mp.Process(target=nothing)
            p.start()
            p.join()
        v.append((time.perf_counter() - t0) * 1e3 / n)
    emit("Process start + join", "ms", v)
    for workers in POOL_SIZES:
        v = []
        for _ in range(reps):
            n = 1 if quick else 5
            t0 = time.perf_counter()
            for _ in range(n):
                with mp.Pool(workers) as p:
                    p.apply(square, (1,))
            v.append((time.perf_counter() - t0) * 1e3 / n)
        emit(f"Pool({workers}) create + first task + teardown", "ms", v)
    for workers in (2, 32):
        v = []
        for _ in range(reps):
            with mp.Pool(workers) as p:
                p.map(square, range(4 * workers), 1)
                # Pool has no public list of its workers: _pool holds their Processes.
                v.append(sum(pss_kib(w.pid) for w in p._pool) / len(p._pool) / 1024.0)
        emit(f"idle pool worker memory (PSS per worker), Pool({workers})", "MiB", v)
    v = []
    for _ in range(reps):
        with mp.Pool(2) as p:
            p.map(square, range(8), 1)
            v.append(sum(uss_kib(w.pid) for w in p._pool) / len(p._pool) / 1024.0)
    emit("idle pool worker memory (USS per worker), Pool(2)", "MiB", v)

    shared_state_scenarios(reps, scale)

    n_map = int(1_000_000 * scale)
    n_small = int(100_000 * scale)
    xs = list(range(n_map))
    pairs = [(i, i + 1) for i in range(n_map)]
    small = xs[:n_small]
    with mp.Pool(2) as pool:
        pool.map(square, small)
        v = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = pool.map(square, xs)
            v.append(len(out) / (time.perf_counter() - t0))
        emit("map(square, 1M ints), default chunks", "items/s", v)
        v = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = pool.map(square, small, 1)
            v.append(len(out) / (time.perf_counter() - t0))
        emit("map(square, 100k ints, chunksize=1)", "items/s", v)
        v = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = pool.starmap(multiply, pairs)
            v.append(len(out) / (time.perf_counter() - t0))
        emit("starmap(multiply, 1M pairs)", "items/s", v)
        v = []
        for _ in range(reps):
            lat = []
            for i in range(int(2000 * scale + 200)):
                t0 = time.perf_counter()
                pool.apply_async(square, (i,)).get()
                lat.append((time.perf_counter() - t0) * 1e6)
            v.append(statistics.median(lat))
        emit("apply_async(square).get() round trip p50", "us", v)
        megabytes = int(2000 * scale)
        v = []
        for _ in range(reps):
            t0 = time.perf_counter()
            total = sum(pool.imap_unordered(len, megabyte_strings(megabytes), 1))
            v.append((total >> 20) / (time.perf_counter() - t0))
            assert total == megabytes << 20
        emit("imap_unordered(len, 2,000 x 1 MiB strings, chunksize=1)", "MiB/s", v)

    # Python's pipeline of pools: imap over imap over imap, each stage a Pool(2). imap's
    # default chunksize (1) is 30x slower; 128 matches mpx's automatic batch here.
    piped = xs[: int(200_000 * scale)]
    v = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with mp.Pool(2) as a, mp.Pool(2) as b, mp.Pool(2) as c:
            out = list(c.imap(negate, b.imap(add_one, a.imap(square, piped, 128), 128), 128))
        v.append(len(out) / (time.perf_counter() - t0))
        assert out[-1] == -(piped[-1] ** 2 + 1)
    emit("pipeline of 3 map stages (2 workers each), 200k ints, start to end", "items/s", v)


if __name__ == "__main__":
    main()
