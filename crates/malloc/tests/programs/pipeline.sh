#!/bin/sh
# A shell pipeline over generated text: sort | uniq -c | sort | head.
# Usage: pipeline.sh [LINES]
set -eu
n=${1:-300000}
seq 1 "$n" | awk '{ print "w" ($1 * 7919) % 10007, $1 % 13 }' | sort | uniq -c | sort -k1,1nr -k2,2 | head -20
seq 1 "$n" | awk '{ print ($1 * 7919) % 10007 }' | sort -n | uniq | wc -l
