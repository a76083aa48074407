#!/usr/bin/env python3
"""Checks the C ABI against its header.

usage: abi_check.py HEADER EXPORTED_SYMBOLS_FILE

- The library's exported symbols (one per line, e.g. from `nm -D --defined-only`) must be
  exactly the functions declared in HEADER: nothing undocumented exported, nothing declared
  missing.
- Every declared function must be documented with its thread, CLAP-style ([audio-thread],
  [control-thread], [analysis-thread] or [any-thread]), and say whether it may block or allocate.
Exits 1 with the differences otherwise.
"""
import re
import sys

header, exported_file = sys.argv[1], sys.argv[2]
text = open(header).read()
decls = {}
for m in re.finditer(r"/\*\*((?:(?!\*/).)*)\*/\s*\n([^;{}]*?\b(loophole_\w+)\s*\([^;]*\);)", text, re.S):
    decls[m.group(3)] = m.group(1)
undocumented = set(re.findall(r"\b(loophole_\w+)\s*\(", text)) - set(decls)
exported = {l.strip() for l in open(exported_file) if l.strip()}
ok = True
if undocumented:
    print("declared without a doc comment:", sorted(undocumented))
    ok = False
if exported - set(decls):
    print("exported but not in the header:", sorted(exported - set(decls)))
    ok = False
if set(decls) - exported:
    print("in the header but not exported:", sorted(set(decls) - exported))
    ok = False
for name, doc in sorted(decls.items()):
    if not re.search(r"\[(audio|control|analysis|any)-thread\]", doc):
        print(f"{name}: no [audio-thread]/[control-thread]/[analysis-thread]/[any-thread] tag")
        ok = False
    if not re.search(r"block|allocat|wait-free", doc, re.I):
        print(f"{name}: does not say whether it may block or allocate")
        ok = False
if not ok:
    sys.exit(1)
print(f"ok: {len(exported)} exported symbols == the {len(decls)} documented loophole_* functions, each with its thread and blocking/allocation rule")
