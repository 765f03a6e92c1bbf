"""Peak memory of the running process, for the benchmarks' child processes."""


def peak_mib() -> float:
    """This process image's resident high-water mark (VmHWM) in MiB.

    Not ``resource.getrusage(...).ru_maxrss``: Linux carries the parent's RSS at
    fork across exec into it, so a child of a large process would report the parent's.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
