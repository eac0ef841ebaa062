#!/bin/sh
# Records the malloc traces of benches/traces/ with the malloc_trace.c shim.
#
#   tools/malloc-trace/record.sh [OUT_DIR]     (default: benches/traces)
#
# Each program runs under LD_PRELOAD in a temporary directory; of the processes it starts,
# the one with the longest trace is kept (cc1 for gcc, the git process doing the work),
# compressed with zlib (level 9) as OUT_DIR/<name>.mkt.z. `memkit-bench replay` decodes
# them; `memkit-bench replay --describe` prints their operation counts.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../benches/traces}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=$(python3 -c 'import sys; print(sys.executable)')

cc -O2 -Wall -shared -fPIC -o "$work/malloc_trace.so" "$here/malloc_trace.c"

# record NAME COMMAND...: runs COMMAND traced, keeps its largest process's trace.
record() {
    name=$1
    shift
    rm -f "$work/t".*
    MEMKIT_TRACE="$work/t" LD_PRELOAD="$work/malloc_trace.so" "$@" >/dev/null
    largest=$(ls -S "$work/t".* | head -n 1)
    "$python" -c 'import sys, zlib; open(sys.argv[2], "wb").write(zlib.compress(open(sys.argv[1], "rb").read(), 9))' \
        "$largest" "$out/$name.mkt.z"
    echo "$name: $(wc -c <"$largest") bytes raw, $(wc -c <"$out/$name.mkt.z") compressed"
}

cd "$work"

# An interpreter: python building, serialising and parsing JSON, and a sqlite table.
cat >python_work.py <<'PY'
import json, sqlite3, random
random.seed(7)
docs = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 13), "x" * (i % 40)],
         "score": random.random(), "nested": {"a": list(range(i % 17))}} for i in range(20000)]
text = json.dumps(docs)
back = json.loads(text)
db = sqlite3.connect(":memory:")
db.execute("create table items (id integer primary key, name text, body text)")
db.executemany("insert into items values (?, ?, ?)", ((d["id"], d["name"], json.dumps(d)) for d in back))
db.execute("create index items_name on items (name)")
rows = db.execute("select name, length(body) from items where name like 'item1%' order by name").fetchall()
words = {}
for d in back:
    for t in d["tags"]:
        words[t] = words.get(t, 0) + 1
print(len(text), len(rows), len(words))
PY
record python "$python" python_work.py

# A compiler: cc1 on a generated C file of forty functions.
"$python" - >gen.c <<'PY'
for i in range(40):
    print("struct s%d { int a[%d]; double d; struct s%d *next; };" % (i, i % 7 + 1, i))
    print("static int f%d(struct s%d *p, int n) {" % (i, i))
    print("  int acc = 0; for (int k = 0; k < n; k++) { acc += p->a[k %% %d] * k; if (acc > %d) acc ^= n; }" % (i % 7 + 1, i * 31))
    print("  switch (n & 7) { case 0: acc += 1; break; case 1: acc *= 3; break; case 2: acc -= n; break; default: acc = acc / (n | 1); }")
    print("  return p->next ? acc + f%d(p->next, n - 1) : acc; }" % i)
print("int main(void) { int t = 0;")
for i in range(40):
    print("  { struct s%d v = {0}; t += f%d(&v, %d); }" % (i, i, i))
print("  return t & 1; }")
PY
record gcc gcc -O2 -c gen.c -o gen.o

# A version-control tool: git log --stat over a repository of 150 commits.
git init -q repo
(
    cd repo
    git config user.email trace@example.org
    git config user.name trace
    for i in $(seq 1 150); do
        for f in 1 2 3 4 5; do
            seq "$i" "$((i * f + 40))" >"file$f.txt"
            echo "change $i $f" >>"notes$((i % 9)).txt"
        done
        git add -A
        git commit -q -m "commit $i"
    done
)
record git git -C repo log --stat -p

# A database: the sqlite3 shell inserting 40 000 rows, building an index and querying.
cat >db.sql <<'SQL'
create table t (id integer primary key, k text, v blob);
with recursive n(i) as (select 1 union all select i + 1 from n where i < 40000)
insert into t select i, printf('key%08d', (i * 7919) % 40000), randomblob(i % 200) from n;
create index t_k on t (k);
select count(*), sum(length(v)) from t where k between 'key00010000' and 'key00020000';
select k, count(*) from t group by substr(k, 1, 6) order by 2 desc limit 5;
delete from t where id % 3 = 0;
vacuum;
SQL
record sqlite sqlite3 db.sqlite3 -init db.sql .quit

# A multithreaded program: python's thread pool, four threads building and parsing JSON.
cat >threads_work.py <<'PY'
import json
from concurrent.futures import ThreadPoolExecutor
def work(seed):
    out = []
    for i in range(3000):
        d = {"k%d" % j: [seed, i, j, "v" * (j % 50)] for j in range(i % 23)}
        out.append(json.loads(json.dumps(d)))
    return sum(len(x) for x in out)
with ThreadPoolExecutor(4) as pool:
    print(sum(pool.map(work, range(8))))
PY
record threads "$python" threads_work.py
