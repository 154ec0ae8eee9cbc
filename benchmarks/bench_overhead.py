"""Per-task overhead of nanoray next to multiprocessing.Pool and
ProcessPoolExecutor (and Ray when installed), in one run: init until the
first task, pipelined no-op tasks/s, task round trip, put/get of a small
value and of a 256 MiB array, a 256 MiB array handed to a task.

The same as ``python -m nanoray microbenchmark``; arguments pass through
(``--help``).  BENCHMARKS.md records its output.
"""

import sys

from nanoray._microbenchmark import main

if __name__ == "__main__":
    sys.exit(main())
