"""The peak memory of a child process, for tests that run code in a fresh interpreter: the
source of ``peak_kb()`` and ``peak_mb()``, put at the top of the child's script."""

PEAK_SOURCE = '''
import resource


def peak_kb():
    # VmHWM is this process's own peak; ru_maxrss also counts the parent's memory at fork time,
    # which a large test process would pass on (Linux keeps it across exec).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_mb():
    return peak_kb() / 1024
'''
