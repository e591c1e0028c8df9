#!/usr/bin/env python3
"""Prints one line per entry of a tar stream on stdin: path, type, mode, uid:gid, link target
and sha256 of the content, sorted by path. Two trees are equal when their manifests are.
mtimes are left out on purpose (kiln clamps them to SOURCE_DATE_EPOCH)."""
import hashlib
import sys
import tarfile

KINDS = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l",
         tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}

def main():
    rows = {}
    hashes = {}
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        for m in tar:
            name = m.name.lstrip("./").rstrip("/") or "."
            if name == ".":
                continue
            kind = KINDS.get(m.type, "?")
            content = ""
            link = ""
            if kind == "f":
                content = hashlib.sha256(tar.extractfile(m).read()).hexdigest()
                hashes[name] = content
            elif kind == "l":
                link = m.linkname
            elif kind == "h":
                # A hard link compares as the file it links to.
                kind, content = "f", hashes.get(m.linkname.lstrip("./"), "?")
            elif kind in "cb":
                content = f"{m.devmajor},{m.devminor}"
            rows[name] = f"{name}\t{kind}\t{m.mode:04o}\t{m.uid}:{m.gid}\t{link}\t{content}"
    for name in sorted(rows):
        print(rows[name])

main()
