#!/usr/bin/env python3
"""Counts test cases in every JUnit XML file of a directory and prints
"N passed, N failed[, N skipped]"; exits 1 if any failed or none ran."""
import pathlib
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
reports = sorted(pathlib.Path(sys.argv[1]).glob("*.xml"))
for path in reports:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        print(f"{path}: unreadable report: {e}", file=sys.stderr)
        failed += 1
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)
