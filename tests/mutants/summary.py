"""Per-file table of a cargo-mutants run: caught / missed / unviable / timeout, and the
share of viable mutants caught. Usage: python3 summary.py .../mutants.out/outcomes.json"""
import collections
import json
import sys

KINDS = {"CaughtMutant": "caught", "MissedMutant": "missed", "Unviable": "unviable",
         "Timeout": "timeout"}
outcomes = json.load(open(sys.argv[1]))["outcomes"]
table = collections.defaultdict(collections.Counter)
for o in outcomes:
    scenario = o["scenario"]
    if not isinstance(scenario, dict) or "Mutant" not in scenario:
        continue  # the baseline
    table[scenario["Mutant"]["file"]][KINDS.get(o["summary"], o["summary"])] += 1
print(f"{'file':40} {'caught':>6} {'missed':>6} {'unviable':>8} {'timeout':>7} {'score':>6}")
total = collections.Counter()
for file, c in sorted(table.items()):
    total.update(c)
    viable = c["caught"] + c["missed"] + c["timeout"]
    score = f"{100 * (c['caught'] + c['timeout']) / viable:.0f}%" if viable else "-"
    print(f"{file:40} {c['caught']:6} {c['missed']:6} {c['unviable']:8} {c['timeout']:7} {score:>6}")
viable = total["caught"] + total["missed"] + total["timeout"]
if viable:
    print(f"{'all':40} {total['caught']:6} {total['missed']:6} {total['unviable']:8} "
          f"{total['timeout']:7} {100 * (total['caught'] + total['timeout']) / viable:.0f}%")
