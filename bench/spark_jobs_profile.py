"""Spark jobs per run: a small day (STORES x 30 facings) through the runner on local[CORES].

``PYTHONPATH=<checkout> python bench/spark_jobs_profile.py CORES ROUNDS STORES``: a warm-up run,
then ROUNDS runs, each on a fresh lake; prints per run the wall time, the Spark jobs (a job group
and ``statusTracker()``) at each phase's start, and for the first measured run the driver's
DataFrame actions by call site and the jobs by their first stage's name. Run two checkouts side
by side to compare versions (``bench/results/lake_spark_jobs.json``). Not part of ``python -m
bench`` (it compares checkouts)."""
import collections, json, sys, tempfile, time, traceback
from pathlib import Path
from cloud.synth import day_events, fill_hub
from gondola.hub import LocalHub
from cloud.ingest.source import LocalHubSource
from cloud.ingest.stream import ingest_stream
from cloud.lake.runner import transform
from cloud.lake.storage import open_storage
from cloud.lake.spark import SparkEngine

cores, rounds, stores = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tmp = Path(tempfile.mkdtemp(prefix="i13prof"))
with LocalHub(tmp / "hub.sqlite") as hub:
    fill_hub(hub, list(day_events(stores=stores, facings=30, hours=24)), per_message=500)
spark = SparkEngine(master=f"local[{cores}]")
sc = spark.session.sparkContext
calls = collections.Counter()
frame_class = type(spark.session.range(1))
for name in ("toArrow", "toPandas", "collect", "count", "toLocalIterator"):
    m = getattr(frame_class, name)
    def wrap(df, *a, _m=m, _n=name, **k):
        st = [f for f in traceback.extract_stack()[:-1] if "/cloud/" in f.filename and "_collect" not in f.name and f.name not in ("run", "count")]
        where = f"{st[-1].filename.split('/cloud/')[-1]}:{st[-1].lineno}:{st[-1].name}" if st else "?"
        calls[(_n, where)] += 1
        return _m(df, *a, **k)
    setattr(frame_class, name, wrap)
out = []
for r in range(rounds + 1):
    storage = open_storage(tmp / f"lake{r}")
    with LocalHubSource(tmp / "hub.sqlite", consumer_group=f"g{r}") as src:
        ingest_stream(storage, src, max_messages=500)
    calls.clear()
    sc.setJobGroup(f"run{r}", "run")
    phases = []
    t0 = time.perf_counter()
    transform(storage, spark, maintenance=False,
              progress=lambda n: phases.append((n, time.perf_counter() - t0, len(sc.statusTracker().getJobIdsForGroup(f"run{r}")))))
    wall = time.perf_counter() - t0
    jobs = len(sc.statusTracker().getJobIdsForGroup(f"run{r}"))
    phases.append(("end", wall, jobs))
    print(json.dumps({"round": r, "warm": r == 0, "wall_s": round(wall, 1), "jobs": jobs, "phases": phases}), flush=True)
    if r == 1:
        for (n, w), c in sorted(calls.items(), key=lambda x: -x[1]):
            print(f"   {c:4d} {n:10s} {w}")
        names = collections.Counter()
        st = sc.statusTracker()
        for j in st.getJobIdsForGroup(f"run{r}"):
            info = st.getJobInfo(j)
            first = min(info.stageIds) if info and info.stageIds else None
            si = st.getStageInfo(first) if first is not None else None
            names[si.name.split(" at ")[0] if si else "?"] += 1
        print("   job first-stage names:", dict(names.most_common()))
    out.append({"wall_s": wall, "jobs": jobs})
spark.stop()
