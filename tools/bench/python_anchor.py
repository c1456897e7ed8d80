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
