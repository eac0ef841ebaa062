# Python under test: sqlite in memory with an index, a JSON dump and load of a large dict,
# many small objects. Prints digests only, so that runs under any allocator compare equal.
import hashlib
import json
import sqlite3
import sys

scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1

db = sqlite3.connect(":memory:")
db.execute("create table t (id integer primary key, k text, v integer)")
db.executemany("insert into t (k, v) values (?, ?)", ((f"key{i * 7919 % 100003}", i) for i in range(60000 * scale)))
db.execute("create index tk on t (k)")
rows = db.execute("select k, sum(v) from t where k like 'key1%' group by k order by k limit 50").fetchall()
count = db.execute("select count(*) from t where k between 'key2' and 'key5'").fetchone()[0]
print("sqlite", len(rows), count, hashlib.sha256(repr(rows).encode()).hexdigest()[:16])

big = {f"k{i}": {"n": i, "s": "x" * (i % 37), "l": list(range(i % 11))} for i in range(80000 * scale)}
text = json.dumps(big, sort_keys=True)
back = json.loads(text)
print("json", len(text), back == big, hashlib.sha256(text.encode()).hexdigest()[:16])

objs = []
for r in range(5):
    objs = [(i, str(i), [i] * (i % 5), {"a": i}) for i in range(100000 * scale)]
    objs = [o for o in objs if o[0] % 3]
print("objects", len(objs), sum(o[0] for o in objs))
