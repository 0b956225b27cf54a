"""Run the benchmarks: `python benchmarks/run.py [NAME ...]`.

Each `benchmarks/bench_<name>.py` has a `main()` that measures our method and the one it
replaces side by side in one run and prints the ratio. With no NAME, every benchmark runs.
"""
import importlib.util, sys, time
from pathlib import Path

HERE = Path(__file__).parent

def available() -> dict:
    "Benchmark name -> file, for every bench_*.py beside this script"
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}

def run(name: str, path: Path):
    "Import one benchmark file and call its main()"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    module.main()
    print(f"=== {name}: {time.perf_counter() - start:.1f} s ===", flush=True)

if __name__ == "__main__":
    benches = available()
    names = sys.argv[1:] or list(benches)
    unknown = [n for n in names if n not in benches]
    if unknown: sys.exit(f"unknown benchmark(s) {unknown}; available: {list(benches)}")
    for name in names: run(name, benches[name])
