"""Write scikit-learn's bundled digits (1,797 x 64, values 0..16) as a CSV with a label column.

Used by `make demo` and the cli/ examples: `python cli/digits_csv.py digits.csv`; `-` writes
to stdout (`python cli/digits_csv.py - | deepcluster train - ...`).
"""

import sys

import pandas as pd
from sklearn.datasets import load_digits

out = sys.argv[1] if len(sys.argv) > 1 else "digits.csv"
d = load_digits()
df = pd.DataFrame(d.data, columns=[f"px{i}" for i in range(d.data.shape[1])])
df.insert(0, "image_id", [f"img{i:04d}" for i in range(len(df))])
df["label"] = d.target
if out == "-":
    try:
        df.to_csv(sys.stdout, index=False)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`)
        sys.stdout = None
    sys.exit(0)
df.to_csv(out, index=False)
print(f"wrote {out}: {len(df)} rows", file=sys.stderr)
