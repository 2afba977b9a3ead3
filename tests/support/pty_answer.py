#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal and types each answer once its prompt appeared.

    pty_answer.py PROMPT=ANSWER [PROMPT=ANSWER ...] -- CMD [ARG ...]

Prints everything the command wrote to the terminal; exits with the command's code.
The answers are typed in order, each a moment after its prompt text was seen (so a
reader that buffers the terminal never swallows two answers at once). Gives up after 60 s.
"""
import os
import pty
import select
import sys
import time

sep = sys.argv.index("--")
pairs = [a.split("=", 1) for a in sys.argv[1:sep]]
cmd = sys.argv[sep + 1 :]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
out = b""
seen_up_to = 0
deadline = time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 1)
    if not ready:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:  # the child closed the terminal
        break
    if not data:
        break
    out += data
    if pairs:
        at = out.find(pairs[0][0].encode(), seen_up_to)
        if at >= 0:
            seen_up_to = at + len(pairs[0][0])
            time.sleep(0.3)  # as a person would: after the prompt has turned echo off
            os.write(fd, (pairs.pop(0)[1] + "\n").encode())
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
