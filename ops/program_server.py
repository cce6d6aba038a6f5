"""What multiprocessing's forkserver imports before it forks the program's runs (ops.graph.run); nothing else does.

The server lives as long as the process that started it. It then exits at once: an orderly teardown of the
provider SDKs' tens of thousands of classes takes seconds of CPU and frees nothing that outlives the process.
"""

import atexit
import os

import ops.reads

ops.reads.install()  # before the program's modules: what they are, as read, decides whether a run may be kept

import ops.program  # noqa: E402 - what each forked run needs, imported once

atexit.register(os._exit, 0)
