"""Every relative link of the docs a built collection ships resolves inside that tarball, which holds no
tests and no dotfiles.

An installed user reads README.md and docs/ from the installed collection (or Galaxy renders them):
a link to a file the tarball leaves out, or to a heading that does not exist, is a dead end there.
Checks Markdown links and images, [text](target) and [text](target#anchor), with GitHub's anchors
(a heading lowercased, punctuation dropped, spaces as dashes). Usage: python3 check_tarball_links.py TARBALL
"""

import posixpath
import re
import sys
import tarfile

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def anchors(text: str) -> set:
    """GitHub's anchor of every heading of a Markdown text (repeated headings get -1, -2, ...)."""
    found, seen, in_code = set(), {}, False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        heading = None if in_code else HEADING.match(line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str):
    in_code = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
                yield number, match[1]


def dead_links(files: dict) -> list:
    """files: {path in the tarball: its text, or None for a file that is not Markdown}."""
    problems = []
    for path, text in sorted(files.items()):
        if text is None:
            continue
        for number, target in links(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):         # https:, mailto: ...: not the tarball's business
                continue
            file_part, _hash, anchor = target.partition("#")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), file_part)) if file_part else path
            if resolved not in files and not any(name.startswith(resolved.rstrip("/") + "/") for name in files):
                problems.append(f"{path}:{number}: {target}: {resolved} is not in the collection")
            elif anchor and files.get(resolved) is not None and anchor not in anchors(files[resolved]):
                problems.append(f"{path}:{number}: {target}: {resolved} has no heading #{anchor}")
    return problems


def tarball_files(tarball: str) -> dict:
    files = {}
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            name = posixpath.normpath(member.name)
            if member.isfile() and name.endswith(".md"):
                files[name] = archive.extractfile(member).read().decode()
            else:
                files[name] = None
    return files


def out_of_place(files: dict) -> list:
    """Members an installed collection must not carry: tests (they need the repository) and dotfiles."""
    return [f"{name}: {'a test' if name.split('/')[0] == 'tests' else 'a dotfile'}, not for an installed collection"
            for name in sorted(files)
            if name.split("/")[0] == "tests" or any(part.startswith(".") for part in name.split("/"))]


def main(argv) -> int:
    files = tarball_files(argv[1])
    problems = out_of_place(files) + dead_links(files)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problems in {argv[1]}" if problems
          else f"every relative link resolves in {argv[1]}; no tests, no dotfiles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
