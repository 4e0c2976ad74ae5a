#!/usr/bin/env python3
"""Calls into functions whose name matches a pattern, counted from a
callgrind profile (such as those scripts/bench-instructions.sh keeps), per
request and by calling function, largest first.

callgrind_annotate shows where instructions go; this shows how often
something is called, which for the allocator is the figure a change moves:
an allocation costs about the same wherever it is made, so fewer calls is
the aim.

Usage: scripts/callgrind-calls.py PROFILE REQUESTS [PATTERN] [TOP]
  PATTERN (empty: the default) defaults to Rust's allocation entry points (__rust_alloc,
  __rust_alloc_zeroed, __rust_realloc); TOP (default 25) callers are listed.
  With TOP 0 only the total per request is printed.
"""
import collections
import re
import sys

ALLOCATIONS = r"^__rustc::__rust_(alloc|alloc_zeroed|realloc)$"


def calls_by_caller(path, pattern):
    """Counts the calls into functions matching `pattern`, keyed by caller."""
    # Names are compressed: the first use of an id gives "(id) name", later ones "(id)".
    names = {}

    def name_of(field):
        found = re.match(r"\((\d+)\)(?: (.*))?$", field)
        if not found:
            return field
        key, name = found.groups()
        if name:
            names[key] = name
        return names.get(key, key)

    calls = collections.Counter()
    caller = callee = None
    with open(path, encoding="utf-8", errors="replace") as profile:
        for line in profile:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                caller = name_of(line[3:])
            elif line.startswith("cfn="):
                callee = name_of(line[4:])
            elif line.startswith("calls=") and callee and re.search(pattern, callee):
                calls[caller] += int(line[6:].split()[0])
    return calls


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, requests = sys.argv[1], int(sys.argv[2])
    pattern = (sys.argv[3] if len(sys.argv) > 3 else "") or ALLOCATIONS
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    calls = calls_by_caller(path, pattern)
    total = sum(calls.values())
    if top == 0:
        print(f"{total / max(requests, 1):.1f}")
        return
    print(f"{total / max(requests, 1):8.2f} per request in all ({total} calls matching {pattern})")
    for caller, count in calls.most_common(top):
        print(f"{count / max(requests, 1):8.2f}  {caller[:160]}")


if __name__ == "__main__":
    main()
