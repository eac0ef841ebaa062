#!/usr/bin/env python3
"""Turns `strace -f -e trace=memory,clone,clone3,fork,vfork,execve` output into memkit's
compact address-space trace (see benches/traces/README.md): one operation a line, threads
grouped into address spaces (a clone with CLONE_VM shares its parent's; a fork starts a new
one; a successful execve gives its process a new, empty one). Failed calls are left out."""
import re
import sys

CALL = re.compile(r'^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\w+)')
PROT = {'PROT_READ': 1, 'PROT_WRITE': 2, 'PROT_EXEC': 4}


def prot(text):
    return sum(v for k, v in PROT.items() if k in text)


def num(text):
    text = text.strip()
    return 0 if text == 'NULL' else int(text, 0)


def split_args(text):
    out, depth, cur = [], 0, ''
    for ch in text:
        if ch in '{[(':
            depth += 1
        elif ch in '}])':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur.strip())
            cur = ''
        else:
            cur += ch
    out.append(cur.strip())
    return out


def main(src, dst, name):
    pending = {}
    space_of = {}
    spaces = 0
    lines = []

    def space(pid):
        nonlocal spaces
        if pid not in space_of:
            space_of[pid] = spaces
            lines.append(f's {spaces}')
            spaces += 1
        return space_of[pid]

    for raw in open(src, errors='replace'):
        raw = raw.rstrip('\n')
        m = re.match(r'^(\d+)\s+(.*)<unfinished \.\.\.>$', raw)
        if m:
            pending[m.group(1)] = m.group(2)
            continue
        m = re.match(r'^(\d+)\s+<\.\.\. \w+ resumed>(.*)$', raw)
        if m:
            raw = f'{m.group(1)} {pending.pop(m.group(1), "")}{m.group(2)}'
        m = CALL.match(raw)
        if not m:
            continue
        pid, call, args, ret = m.group(1), m.group(2), split_args(m.group(3)), m.group(4)
        if ret.startswith('-'):
            continue
        a = space(pid)
        if call in ('clone', 'clone3', 'fork', 'vfork'):
            child = ret
            if 'CLONE_VM' in m.group(3) and call != 'vfork':
                space_of[child] = a
            else:
                space_of.pop(child, None)
                space(child)
        elif call == 'execve':
            space_of.pop(pid, None)
            space(pid)
        elif call == 'mmap':
            fixed = 1 if 'MAP_FIXED' in args[3] else 0
            lines.append(f'm {a} {num(ret):x} {num(args[1]):x} {prot(args[2])} {fixed}')
        elif call == 'munmap':
            lines.append(f'u {a} {num(args[0]):x} {num(args[1]):x}')
        elif call == 'mprotect':
            lines.append(f'p {a} {num(args[0]):x} {num(args[1]):x} {prot(args[2])}')
        elif call == 'mremap':
            lines.append(f'r {a} {num(args[0]):x} {num(args[1]):x} {num(args[2]):x} {num(ret):x}')
        elif call == 'brk':
            lines.append(f'b {a} {num(ret):x}')
    with open(dst, 'w') as out:
        out.write('# vma trace: ' + ' '.join(name.split()) + '\n')
        out.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3])
