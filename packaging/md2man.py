#!/usr/bin/env python3
"""Turns a Markdown page of mm's docs into a man page (roff), for the subset mm's docs
use: headings, paragraphs, bullet lists, fenced code, tables, inline code, bold, italics
and links. Usage: md2man.py FILE.md NAME SECTION DATE SUMMARY > NAME.SECTION"""
import re
import sys


def escape(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def inline(text):
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append("\\fB" + escape(part[1:-1]) + "\\fR")
        else:
            part = escape(part)
            part = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", part)
            part = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"\\fI\1\\fR", part)
            out.append(part)
    return "".join(out)


def line_start(text):
    """roff reads a leading . or ' as a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def main():
    path, name, section, date, summary = sys.argv[1:6]
    lines = open(path, encoding="utf-8").read().splitlines()
    out = [f'.TH "{name.upper()}" "{section}" "{date}" "mm" "mm manual"',
           ".SH NAME", f"{escape(name)} \\- {inline(summary)}", ".SH DESCRIPTION"]
    i = 1 if lines and lines[0].startswith("# ") else 0
    paragraph = []

    def flush():
        if paragraph:
            out.append(".PP")
            out.append(line_start(inline(" ".join(paragraph))))
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            out.append(".PP")
            out.append(".nf")
            out.append(".RS 4")
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(line_start(escape(lines[i])))
                i += 1
            out.append(".RE")
            out.append(".fi")
        elif line.startswith("### "):
            flush()
            out.append(".SS " + inline(line[4:]))
        elif line.startswith("## "):
            flush()
            out.append(".SH " + inline(line[3:]).upper())
        elif line.startswith("|"):
            flush()
            out.append(".PP")
            out.append(".nf")
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    out.append(line_start(inline("  \u2014  ".join(cells))))
                i += 1
            out.append(".fi")
            continue
        elif re.match(r"^\s*- ", line):
            flush()
            item = [line.split("- ", 1)[1]]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and not re.match(r"^\s*- ", lines[i]):
                item.append(lines[i].strip())
                i += 1
            out.append(".IP \\(bu 2")
            out.append(line_start(inline(" ".join(item))))
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    print("\n".join(out))


if __name__ == "__main__":
    main()
