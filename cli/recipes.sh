#!/usr/bin/env bash
# Pipe recipes: what to do with deepcluster's labels using everyday tools.
#
#   cli/recipes.sh LABELS.csv DATA.csv [LABEL_COLUMN]
#
# LABELS.csv is `deepcluster assign` / `train --labels` output (header `id,cluster[,p0..]`);
# DATA.csv is the input the labels came from, with its id in the FIRST column (as
# `cli/digits_csv.py` writes it: image_id,px0..px63,label). Each recipe prints a titled section;
# copy the one you need. Recipes that need a tool which is not installed are skipped.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: recipes.sh LABELS.csv DATA.csv [LABEL_COLUMN]" >&2
    exit 2  # a usage error, as deepcluster's own
fi
labels=$1
data=$2
label_column=${3:-label}
self=$0
while [ -L "$self" ]; do  # linked into a bin folder: follow it to this file in the checkout
    link=$(readlink "$self")
    case $link in
        /*) self=$link ;;
        *) self=$(dirname "$self")/$link ;;
    esac
done
here=$(cd "$(dirname "$self")" && pwd -P)
if [ -n "${DEEPCLUSTER_PYTHON:-}" ]; then  # the same choice as cli/deepcluster
    python=$DEEPCLUSTER_PYTHON
elif [ -x "$here/../.venv/bin/python" ]; then
    python=$here/../.venv/bin/python
else
    python=python3
fi

echo "## cluster sizes: sort | uniq -c"
# straight from assign:
#   deepcluster assign model.pt data.csv --id-column image_id --label-column label |
#       tail -n +2 | cut -d, -f2 | sort -n | uniq -c
tail -n +2 "$labels" | cut -d, -f2 | sort -n | uniq -c

echo "## labels joined to the input rows on id: join"
# join needs both inputs sorted on the key; the header lines are dropped first.
# Output: id,cluster,<the data columns after its id>; here the first 4 fields of each row.
LC_ALL=C join -t, -1 1 -2 1 \
    <(tail -n +2 "$labels" | cut -d, -f1,2 | LC_ALL=C sort -t, -k1,1) \
    <(tail -n +2 "$data" | LC_ALL=C sort -t, -k1,1) |
    cut -d, -f1-4 | sed -n 1,5p  # sed, not head: head would cut the pipe under pipefail

echo "## the largest cluster's ids: awk"
big=$(tail -n +2 "$labels" | cut -d, -f2 | sort -n | uniq -c | sort -rn | awk 'NR==1{print $2}')
awk -F, -v c="$big" 'NR > 1 && $2 == c {print $1}' "$labels" | sed -n 1,5p

if "$python" -c "import pandas" >/dev/null 2>&1; then
    echo "## clusters against classes: a pandas one-liner"
    # rows matched on the id (the data's first column), not by position: sorted labels or
    # one shard's (assign --shard) pair with the right classes
    "$python" -c "import pandas as pd, sys; l = pd.read_csv(sys.argv[1], dtype={'id': str}); \
d = pd.read_csv(sys.argv[2]); d = d.set_axis([str(c) for c in d.columns], axis=1); \
d[d.columns[0]] = d[d.columns[0]].astype(str); m = l.merge(d, left_on='id', right_on=d.columns[0]); \
print(pd.crosstab(m['cluster'], m[sys.argv[3]], rownames=['cluster'], colnames=['class']))" \
        "$labels" "$data" "$label_column"
else
    echo "## pandas: not installed for $python, skipped"
fi

if command -v duckdb >/dev/null 2>&1; then
    echo "## SQL over the files: duckdb"
    id_column=$(sed -n 1p "$data" | cut -d, -f1)
    duckdb -c "select l.cluster, count(*) as n, mode(d.\"$label_column\") as majority_class
               from read_csv_auto('$labels') l
               join read_csv_auto('$data') d on cast(d.\"$id_column\" as varchar) = cast(l.id as varchar)
               group by l.cluster order by l.cluster"
else
    echo "## duckdb: not installed, skipped"
fi
