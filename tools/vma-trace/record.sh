#!/usr/bin/env bash
# Records the address-space traces of benches/traces/vma-*.trace: each program runs under
# `strace -f` (every mmap, munmap, mprotect, mremap and brk, and the clones, forks and
# execs that decide which address space a thread belongs to), and compact.py turns the
# output into one operation a line. Needs strace, python3, gcc, git, xz.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../benches/traces}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
record() {
    local name=$1
    shift
    strace -f -qq -e trace=memory,clone,clone3,fork,vfork,execve -o "$work/$name.strace" "$@" >/dev/null 2>&1 || true
    python3 "$here/compact.py" "$work/$name.strace" "$work/vma-$name.trace" "$name ($1)"
    cp "$work/vma-$name.trace" "$out/vma-$name.trace"
    echo "vma-$name: $(grep -vc '^[s#]' "$work/vma-$name.trace") operations"
}
cd "$work"
record python-sqlite-json python3 -c "import sqlite3,json
c=sqlite3.connect(':memory:');c.execute('create table t(a,b)')
c.executemany('insert into t values(?,?)',[(i,str(i)*20) for i in range(50000)])
rows=c.execute('select * from t').fetchall();print(len(json.loads(json.dumps(rows))))"
cat >"$work/prog.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct node { struct node *next; char name[40]; };
int main(void) {
    struct node *head = NULL;
    for (int i = 0; i < 1000; i++) {
        struct node *n = malloc(sizeof *n);
        snprintf(n->name, sizeof n->name, "node %d", i);
        n->next = head;
        head = n;
    }
    size_t total = 0;
    for (struct node *n = head; n; n = n->next) total += strlen(n->name);
    printf("%zu\n", total);
    return 0;
}
C
record gcc-compile gcc -O2 -c "$work/prog.c" -o "$work/prog.o"
git init -q "$work/repo"
for i in $(seq 1 40); do
    echo "line $i" >>"$work/repo/file.txt"
    git -C "$work/repo" add file.txt
    git -C "$work/repo" -c user.name=t -c user.email=t@t commit -qm "commit $i"
done
record git-log-gc bash -c "git -C '$work/repo' log --stat >/dev/null && git -C '$work/repo' gc -q"
head -c 24000000 /dev/urandom | base64 >"$work/data.txt"
record xz-threads xz -T4 -k -6 "$work/data.txt"
record shell-pipeline bash -c "seq 1 300000 | sort -r | uniq | awk '{s+=\$1} END {print s}' | tr 0-9 a-j"
