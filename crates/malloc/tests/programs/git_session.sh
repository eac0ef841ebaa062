#!/bin/sh
# git on a fresh repository: commits, `log --stat`, `gc`, `fsck`. Dates and names are fixed,
# so that the output (hashes included) is the same under any allocator.
# Usage: git_session.sh DIR [COMMITS]
set -eu
dir=$1
commits=${2:-40}
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=memkit GIT_AUTHOR_EMAIL=memkit@example.org
export GIT_COMMITTER_NAME=memkit GIT_COMMITTER_EMAIL=memkit@example.org
export GIT_AUTHOR_DATE="2024-01-01T00:00:00 +0000" GIT_COMMITTER_DATE="2024-01-01T00:00:00 +0000"
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
git init -q -b main .
i=0
while [ "$i" -lt "$commits" ]; do
    f=src/f$((i % 9)).txt
    mkdir -p src
    seq "$i" $((i * 37 + 400)) | sed "s/^/line $i: /" >> "$f"
    printf 'commit %d\n' "$i" > README
    git add -A
    git commit -q -m "change $i: $f"
    i=$((i + 1))
done
git log --stat | md5sum
git log --oneline | wc -l
git -c pack.threads=1 gc --quiet
git count-objects -v | grep -E '^(count|in-pack|packs)'
git fsck --no-progress 2>&1
git rev-parse HEAD
git log -p --reverse src/f3.txt | md5sum
