"""``python -m nanoray microbenchmark`` and ``python -m nanoray status``
(also the ``nanoray`` command)."""

import sys

USAGE = """usage: nanoray microbenchmark [options]   (per-task overhead next to its peers)
       nanoray microbenchmark --help
       nanoray status                     (what the running nanoray programs are doing)"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "microbenchmark":
        from nanoray import _microbenchmark
        return _microbenchmark.main(argv[1:])
    if argv[0] == "status":
        from nanoray import _status
        return _status.main(argv[1:])
    print("nanoray: unknown command %r\n%s" % (argv[0], USAGE), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
