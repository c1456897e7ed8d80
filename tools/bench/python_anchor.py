"""Python multiprocessing side of tools/bench: same scenarios, same JSON lines."""
import json
import multiprocessing as mp
import statistics
import sys
import time


def square(x):
    return x * x


def multiply(x, y):
    return x * y


def nothing():
    pass


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


def emit(scenario, unit, values):
    print(json.dumps({"scenario": scenario, "unit": unit, "values": values}), flush=True)


def main():
    quick = "--quick" in sys.argv
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
    v = []
    for _ in range(reps):
        n = 5
        t0 = time.perf_counter()
        for _ in range(n):
            with mp.Pool(2) as p:
                p.apply(square, (1,))
        v.append((time.perf_counter() - t0) * 1e3 / n)
    emit("Pool(2) create + first task + teardown", "ms", v)

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


if __name__ == "__main__":
    main()
