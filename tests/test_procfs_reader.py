"""Reading /proc: chunked streaming, OSError translation, a process exiting mid-read."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from vmascope.errors import AccessDenied, ProcessNotFound, VmascopeError
from vmascope.procfs import capture as capture_mod
from vmascope.procfs import early, live
from vmascope.procfs import reader as reader_mod
from vmascope.procfs._fastparse import fill
from vmascope.procfs.reader import stream_fd, translate


def test_fill_reads_until_low_or_eof():
    r, w = os.pipe()
    os.write(w, b"abc")
    os.write(w, b"defgh")
    os.close(w)
    buf = bytearray(16)
    assert fill(r, buf, 16) == (8, True)
    assert bytes(buf[:8]) == b"abcdefgh"
    assert fill(r, buf, 16) == (0, True)
    os.close(r)
    with pytest.raises(OSError) as info:
        fill(r, buf, 16)  # closed descriptor
    assert info.value.errno == errno.EBADF


def test_stream_fd_hands_every_byte_over_in_order():
    data = os.urandom(3 * 65536 + 123)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the writer child
        os.close(r)
        for i in range(0, len(data), 1000):
            os.write(w, data[i : i + 1000])
        os._exit(0)
    os.close(w)
    got = bytearray()
    sizes = []
    total = stream_fd(r, [lambda v: got.extend(v), lambda v: sizes.append(len(v))],
                      chunk=65536)
    os.close(r)
    os.waitpid(pid, 0)
    assert total == len(data) and bytes(got) == data
    assert max(sizes) <= 65536


def test_stream_fd_passes_read_errors_to_the_caller():
    fd = os.open("/", os.O_RDONLY)
    try:
        with pytest.raises(IsADirectoryError):
            stream_fd(fd, [lambda v: None])
    finally:
        os.close(fd)


def _feed_fd_from_pipe(data: bytes, piece: int, **kw):
    """TextParser.feed_fd on a pipe written ``piece`` bytes at a time by a thread: the
    finish() dict, or the ParseError."""
    import threading

    from vmascope.errors import ParseError
    from vmascope.procfs.text import TextParser

    r, w = os.pipe()

    def write() -> None:
        try:
            for i in range(0, len(data), piece):
                os.write(w, data[i : i + piece])
        except BrokenPipeError:
            pass
        finally:
            os.close(w)

    t = threading.Thread(target=write)
    t.start()
    try:
        p = TextParser("pipe", **kw)
        try:
            assert p.feed_fd(r) == len(data)  # every byte read and parsed
            return p.finish()
        except ParseError as exc:
            return exc.line
    finally:
        os.close(r)
        t.join()


def _whole(data: bytes, **kw):
    from vmascope.errors import ParseError
    from vmascope.procfs.text import TextParser

    p = TextParser("whole", **kw)
    try:
        p.feed(data)
        return p.finish()
    except ParseError as exc:
        return exc.line


def _same(a, b) -> None:
    """Two parse results (or error lines) are equal, columns compared byte for byte."""
    def plain(v):
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v if isinstance(v, (int, str, bool)) else bytes(v)

    assert type(a) is type(b)
    if isinstance(b, int):
        assert a == b
    else:
        assert {k: plain(v) for k, v in a.items()} == {k: plain(v) for k, v in b.items()}


_BARE = b"".join(b"7f%010x-7f%010x rw-p 00000000 00:00 0 \n" % (2 * i, 2 * i + 1)
                 for i in range(0x1000, 0x1000 + 3000))  # about 150 KB of maps lines
_BLOCK = (b"7fff00000000-7fff00001000 rw-p 00000000 00:00 0 \nSize:               4 kB\n"
          b"Rss:                4 kB\nVmFlags: rd wr mr mw me ac \n")


@pytest.mark.parametrize("piece", [1000, 4096, 65536])
@pytest.mark.parametrize("keep", [True, False])
def test_feed_fd_gives_a_whole_parse_however_late_smaps_fields_come(piece, keep):
    # The reading thread parses maps text itself, and hands the text over to the
    # caller once smaps fields show: the result is the whole parse's, also when the
    # fields come after many reads of bare lines, and errors are at the same line.
    for data in (_BARE, _BLOCK * 2000, _BARE + _BLOCK * 2000, _BARE + _BLOCK * 50 + _BARE,
                 _BARE + _BLOCK * 50 + b"Rss: x\n" + _BARE,  # a line skipped
                 _BARE[:70000] + b"7f-\n" + _BARE,  # an error before the fields
                 _BARE + _BLOCK * 900 + b"7f-\n" + _BARE):  # and after them
        _same(_feed_fd_from_pipe(data, piece, keep=keep), _whole(data, keep=keep))


def test_translate():
    e = translate(OSError(errno.ESRCH, "x"), 5, "/proc/5/smaps")
    assert isinstance(e, ProcessNotFound) and "exited while being read" in str(e)
    assert isinstance(translate(OSError(errno.ENOENT, "x"), 5, "p"), ProcessNotFound)
    for code in (errno.EACCES, errno.EPERM):
        e = translate(OSError(code, "x"), 5, "/proc/5/maps")
        assert isinstance(e, AccessDenied) and "/proc/5/maps" in str(e)
    e = translate(OSError(errno.EIO, "Input/output error"), 5, "/proc/5/maps")
    assert type(e) is VmascopeError and "Input/output error" in str(e)


# A child with about 10,000 VMAs (alternating protections), so that its smaps text is
# several megabytes: far more than the reader holds in its buffers at once.
MANY = r"""
import ctypes, os, signal
signal.alarm(60)
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
P = os.sysconf("SC_PAGE_SIZE")
a = libc.mmap(None, 10001 * P, 0, 0x22, -1, 0)
for i in range(1, 10000, 2):
    libc.mprotect(a + i * P, P, 3)
print("ready", flush=True)
os.read(0, 1)
"""


@pytest.fixture
def many():
    proc = subprocess.Popen([sys.executable, "-c", MANY], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _killing(real, proc):
    """stream_proc that kills and reaps the process after the first chunk."""

    def stream(pid, name, sinks, *a, **kw):
        def kill_once(view):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

        return real(pid, name, [kill_once, *sinks], *a, **kw)

    return stream


@pytest.mark.parametrize("kind", ["maps", "numa", "summary"])
def test_process_exiting_mid_read(many, monkeypatch, kind):
    """Killed while smaps (kind "maps") or numa_maps, read meanwhile in a thread, is
    read, or while the summary counts maps: each time the process exited while being
    read."""
    from vmascope.procfs.parse import TextParser

    def feed_fd(self, fd, cpus=None):  # the C read loop, the process killed after a chunk
        self.feed(os.read(fd, 1 << 16))
        if self.kind == kind or (kind == "summary" and not self.keep):
            os.killpg(many.pid, signal.SIGKILL)
            many.wait(timeout=10)
        while chunk := os.read(fd, 1 << 20):
            self.feed(chunk)

    monkeypatch.setattr(TextParser, "feed_fd", feed_fd)
    with pytest.raises(ProcessNotFound, match="exited"):
        if kind == "summary":
            live.summarize_process(many.pid)
        else:
            live.read_process(many.pid)


def test_process_exiting_mid_stream(many, monkeypatch):
    monkeypatch.setattr(reader_mod, "stream_proc", _killing(reader_mod.stream_proc, many))
    monkeypatch.setattr(live, "stream_proc", reader_mod.stream_proc)
    with pytest.raises(ProcessNotFound, match="exited"):
        live.stream_process(many.pid, lambda piece: None)


def test_early_read_is_the_same_snapshot(many):
    """The read begun at start-up (procfs.early) is taken over: the same VMAs as a read
    of its own, and nothing is left waiting to be taken."""
    own = live.read_process(many.pid, smaps=True, numa=False)
    early.start(many.pid, ("smaps",))
    assert early.take(many.pid, "smaps") is not None  # it was started...
    early.start(many.pid, ("smaps",))
    taken = live.read_process(many.pid, smaps=True, numa=False)
    assert early.take(many.pid, "smaps") is None  # ...and the second one was taken
    assert len(taken) == len(own) > 1000
    for col in ("start", "end", "perms", "offset", "inode", "vmflags"):
        assert (getattr(taken, col) == getattr(own, col)).all(), col
    assert taken.smaps.keys() == own.smaps.keys()
    assert (taken.smaps["Size"] == own.smaps["Size"]).all()


def test_early_read_of_a_process_that_exits(many):
    early.start(many.pid, ("maps",))
    os.killpg(many.pid, signal.SIGKILL)
    many.wait(timeout=10)
    with pytest.raises(ProcessNotFound):
        live.read_process(many.pid, smaps=False, numa=False)
    early.take(many.pid, "maps")


def test_early_read_that_cannot_start_leaves_the_error_to_the_command():
    early.start(999_999_999, ("maps",))  # no such pid: nothing is started
    assert early.take(999_999_999, "maps") is None
    with pytest.raises(ProcessNotFound):
        live.read_process(999_999_999, smaps=False, numa=False)


def test_cli_prefetch_chooses_the_file_the_command_reads(monkeypatch):
    from vmascope._prefetch import prefetch

    seen = []
    monkeypatch.setattr(early, "start",
                        lambda pid, names, keep, fields: seen.append((pid, names, keep)
                                                                     + ((fields,) if fields
                                                                        else ())))
    monkeypatch.delenv("VMASCOPE_KERNEL_VIEW", raising=False)
    for argv in (["snapshot", "42"], ["snapshot", "--pid", "42", "--json"],
                 ["snapshot", "42", "--json", "--vmas"], ["analyse", "--top", "3", "42"],
                 ["snapshot", "42", "-o", "x.vmasnap"], ["analyze", "--trace", "t", "42"],
                 ["check", "42"], ["snapshot", "not-a-pid"]):
        prefetch(argv)
    prefetch(["snapshot", "42", "--smaps"])
    # the summary only counts; the kernel view and the policies need every VMA
    prefetch(["snapshot", "42", "--kernel-view"])
    prefetch(["snapshot", "42", "--numa"])
    monkeypatch.setenv("VMASCOPE_KERNEL_VIEW", "1")
    prefetch(["snapshot", "42"])
    prefetch(["snapshot", "42", "--no-kernel-view"])
    assert seen == [(42, ("maps",), False), (42, ("maps",), False),
                    (42, ("smaps", "numa_maps"), True, ("Anonymous", "Swap")),
                    (42, ("smaps",), True),
                    (42, ("maps",), True), (42, ("maps",), True), (42, ("maps",), True),
                    (42, ("maps",), False)]


def test_an_early_count_is_not_taken_for_a_read_that_keeps_the_vmas(many):
    """A read that keeps the VMAs never adopts a parser that only counted them (and the
    other way round): it reads the file itself."""
    from vmascope.procfs.text import TextParser

    early.start(many.pid, ("maps",), False)
    try:
        full = TextParser("maps")
        assert reader_mod.parse_proc(many.pid, "maps", full) is full
        res = full.finish()
        assert res["n"] > 1000 and memoryview(res["start"]).nbytes == res["n"] * 8
    finally:
        ahead = early.take(many.pid, "maps", False)
        assert ahead is not None  # still there: the keeping read did not take it
        counted = TextParser("maps", keep=False)
        counted.adopt(ahead.wait())
        got = counted.finish()
    assert got["n"] == res["n"] and "start" not in got
    assert got["total_size"] == sum(
        e - s for s, e in zip(memoryview(res["start"]).cast("Q"),
                              memoryview(res["end"]).cast("Q")))


def test_process_exiting_mid_capture_leaves_no_file(many, monkeypatch, tmp_path):
    monkeypatch.setattr(capture_mod, "stream_proc", _killing(capture_mod.stream_proc, many))
    with pytest.raises(ProcessNotFound):
        capture_mod.capture(many.pid, tmp_path / "x.vmasnap")
    assert list(tmp_path.iterdir()) == []


def test_numa_maps_is_read_at_a_lower_priority_than_smaps(many, monkeypatch):
    """numa_maps, read beside smaps (early or by read_process), runs BESIDE_NICE above
    the nice value of the thread that started it; smaps and the command keep theirs."""
    from vmascope.procfs.parse import TextParser

    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int] = {}
    real_fd = TextParser.feed_fd

    def feed_fd(self, fd, cpus=None):  # the reads in process: each thread's nice value
        seen[self.kind] = os.getpriority(os.PRIO_PROCESS, 0)
        return real_fd(self, fd, cpus)

    monkeypatch.setattr(TextParser, "feed_fd", feed_fd)
    live.read_process(many.pid, smaps=True, numa=True)
    want = min(19, base + early.BESIDE_NICE)
    assert seen == {"maps": base, "numa": want}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base

    real_run = early.EarlyRead._run
    ran: dict[str, int] = {}

    def run(self):  # the early reads: note the nice value the C reader starts with
        real_feed = self.parser.feed_fd
        numa = self._beside

        class Probe:
            def __getattr__(self, name):
                return getattr(real_parser, name)

            def feed_fd(self, fd, cpus=None):
                ran["numa_maps" if numa else "smaps"] = os.getpriority(os.PRIO_PROCESS, 0)
                return real_feed(fd, cpus)

        real_parser = self.parser
        self.parser = Probe()
        try:
            real_run(self)
        finally:
            self.parser = real_parser

    monkeypatch.setattr(early.EarlyRead, "_run", run)
    early.start(many.pid, ("smaps", "numa_maps"))
    for name in ("smaps", "numa_maps"):
        got = early.take(many.pid, name)
        assert got is not None
        got.wait()
    assert ran == {"smaps": base, "numa_maps": want}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base


@pytest.fixture
def cpus():
    """This thread's CPUs, given back after the test whatever it did."""
    had = os.sched_getaffinity(0)
    yield had
    os.sched_setaffinity(0, had)


def _tasks() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


class _PipeOs:
    """``os`` for procfs.early, whose /proc files are pipes: each read blocks until the
    test closes the file's writing end (``ends[name]``)."""

    def __init__(self) -> None:
        self.ends: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, *args):
        r, w = os.pipe()
        self.ends[path.rsplit("/", 1)[1]] = w
        return r


def test_the_smaps_read_has_a_cpu_to_itself_while_it_lasts(monkeypatch, cpus):
    """The early read of smaps keeps the command's other threads (its own, the smaps
    parse, numa_maps's read and parse) off one CPU, which smaps's reading thread may
    use; the command's thread gets its CPUs back when that read ends."""
    import threading
    import time

    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to keep free")
    rest = cpus - {max(cpus)}
    fake = _PipeOs()
    monkeypatch.setattr(early, "os", fake)
    before = _tasks()
    early.start(4242, ("smaps", "numa_maps"))
    smaps, numa = early.take(4242, "smaps"), early.take(4242, "numa_maps")
    assert smaps is not None and numa is not None
    python = {threading.get_native_id(), smaps._thread.native_id, numa._thread.native_id}
    try:
        deadline = time.monotonic() + 10
        while len(_tasks() - before - python) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the two C reading threads, blocked on their pipes
        readers = _tasks() - before - python
        assert len(readers) == 2
        assert {t: os.sched_getaffinity(t) for t in python} == dict.fromkeys(python, rest)
        assert sorted(map(sorted, map(os.sched_getaffinity, readers))) == sorted(
            [sorted(cpus), sorted(rest)])  # smaps's reader: every CPU; numa's: the rest
    finally:
        os.close(fake.ends.pop("smaps"))  # the smaps text ends (empty)
        smaps.wait()
    assert os.sched_getaffinity(0) == cpus  # given back at the end of the smaps read
    os.close(fake.ends.pop("numa_maps"))
    numa.wait()
    assert os.sched_getaffinity(0) == cpus


def test_with_one_cpu_nothing_is_kept_free(monkeypatch):
    class OneCpu:
        def __getattr__(self, name):
            return getattr(os, name)

        def sched_getaffinity(self, pid):
            return {0}

        def sched_setaffinity(self, pid, cpus):
            raise AssertionError("no CPU to keep free")

    monkeypatch.setattr(early, "os", OneCpu())
    assert early.keep_off_one_cpu() is None


def test_read_process_keeps_its_threads_off_the_cpu_of_the_smaps_read(many, monkeypatch,
                                                                     cpus):
    """Without an early read: the smaps parse (the calling thread) and numa_maps's read
    keep off one CPU, smaps's reading thread gets every CPU, and the caller gets its
    CPUs back, also when the read fails."""
    from vmascope.procfs.parse import TextParser

    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to keep free")
    rest = cpus - {max(cpus)}
    seen: dict[str, tuple[set[int], object]] = {}
    real_fd = TextParser.feed_fd

    def feed_fd(self, fd, reader_cpus=None):
        seen[self.kind] = (os.sched_getaffinity(0), reader_cpus)
        return real_fd(self, fd, reader_cpus)

    monkeypatch.setattr(TextParser, "feed_fd", feed_fd)
    live.read_process(many.pid, smaps=True, numa=True)
    assert seen == {"maps": (rest, cpus), "numa": (rest, None)}
    assert os.sched_getaffinity(0) == cpus

    def failing(self, fd, reader_cpus=None):
        raise OSError(errno.EIO, "read failed")

    monkeypatch.setattr(TextParser, "feed_fd", failing)
    with pytest.raises(VmascopeError):
        live.read_process(many.pid, smaps=True, numa=False)
    assert os.sched_getaffinity(0) == cpus


def test_an_early_read_holds_the_cpus_it_keeps_free(monkeypatch):
    """On a host of three CPUs (simulated): while the early read of smaps lasts, the
    command's own read finds its CPUs held and keeps none free itself, so the command's
    thread gets all three back when the early read ends, not the two it had meanwhile."""
    import threading

    class ThreeCpus(_PipeOs):
        def __init__(self) -> None:
            super().__init__()
            self.masks: dict[int, set[int]] = {}

        def sched_getaffinity(self, tid):
            return set(self.masks.get(tid or threading.get_native_id(), {0, 1, 2}))

        def sched_setaffinity(self, tid, cpus):
            self.masks[tid or threading.get_native_id()] = set(cpus)

    fake = ThreeCpus()
    monkeypatch.setattr(early, "os", fake)
    me = threading.get_native_id()
    early.start(4243, ("smaps",))
    read = early.take(4243, "smaps")
    assert read is not None
    try:
        assert fake.sched_getaffinity(0) == {0, 1}
        assert early.keep_off_one_cpu() is None  # held: the early read gives them back
        assert fake.sched_getaffinity(0) == {0, 1}
    finally:
        os.close(fake.ends.pop("smaps"))
        read.wait()
    assert fake.sched_getaffinity(0) == {0, 1, 2}
    kept = early.keep_off_one_cpu()  # no early read now: the command's own split
    assert kept == {0, 1, 2} and fake.sched_getaffinity(0) == {0, 1}
    early.restore_cpus(me, kept)
    assert fake.sched_getaffinity(0) == {0, 1, 2}
