"""Unit tests for each rule in vmascope.kernel.rules and for epoch_for.

Expected answers come from the kernel's predicates as the notes transcribe them (mm/vma.c,
mm/mmap.c, mm/rmap.c, mm/mprotect.c) and are reasoned in the comments.
"""

from __future__ import annotations

import pytest

from vmascope.errors import UsageError
from vmascope.kernel import rules as R
from vmascope.kernel import vmflags as F
from vmascope.kernel.pairs import explain_pair
from vmascope.kernel.epochs import epoch_for, parse_release
from vmascope.model import Vma

LEGACY = epoch_for("6.12.117")
NEW = epoch_for("6.18.44")
P = 4096


class V:
    """A minimal VMA-like object for the predicates."""

    def __init__(self, start: int, end: int, *, pgoff: int | None = None,
                 flags: int = F.VM_READ | F.VM_WRITE | F.VM_MAYREAD | F.VM_MAYWRITE,
                 anon: object = None, chain_len: int | None = None, file: object = None,
                 name: str | None = None, policy: object = None) -> None:
        self.start, self.end = start, end
        self.pgoff = start // P if pgoff is None else pgoff
        self.flags = flags
        self.anon_vma = anon
        n = (1 if anon is not None else 0) if chain_len is None else chain_len
        self.chain = [anon] * n
        self.file = file
        self.anon_name = name
        self.policy = policy
        self.uffd = None


def vmg_of(v: V, start: int | None = None, end: int | None = None) -> R.Vmg:
    return R.Vmg.from_vma(v, start, end)


def codes(reasons: object) -> list[str]:
    return [r.code for r in reasons]  # type: ignore[attr-defined]


# -- epoch_for ----------------------------------------------------------------------------


def test_parse_release_forms() -> None:
    assert parse_release("6.1") == (6, 1, 0)
    assert parse_release("6.12.117") == (6, 12, 117)
    assert parse_release("6.18.44-fc-v595") == (6, 18, 44)
    assert parse_release("7.2.13") == (7, 2, 13)
    assert parse_release("6.1.0-28-cloud-amd64") == (6, 1, 0)
    for bad in ("", "six", "6", "6.x", "linux-6.1"):
        with pytest.raises(UsageError):
            parse_release(bad)


def test_releases_below_5_10_are_refused_with_what_is_supported() -> None:
    for old in ("5.9", "4.19.300", "3.10"):
        with pytest.raises(UsageError, match="5.10"):
            epoch_for(old)
    epoch_for("5.15")
    epoch_for("5.10.223")  # Debian 11 and Amazon Linux 2
    # MADV_POPULATE_(READ|WRITE) came in 5.14 (4ca9b3859dac): unknown advice before
    assert not epoch_for("5.13").populate_advice and epoch_for("5.14").populate_advice


def test_epoch_switches_per_release() -> None:
    # 879bca0a2c4f: the anon_vma rewrite is in 6.16, not in 6.15.
    assert epoch_for("6.15.9").anon_rule == "legacy"
    assert epoch_for("6.16").anon_rule == "tgt_src"
    # New-range merge algorithm: vma_merge (5.15), mmap_region next first (6.1-6.11),
    # vma_merge_new_range (6.12+).
    assert epoch_for("5.15.170").new_range == "vma_merge"
    assert epoch_for("6.1.170").new_range == "next_first"
    assert epoch_for("6.11.11").new_range == "next_first"
    assert epoch_for("6.12").new_range == "merge_new_range"
    # mprotect drops VM_ACCOUNT on unfaulted anon from 6.7.
    assert not epoch_for("6.6.60").mprotect_unaccount
    assert epoch_for("6.7").mprotect_unaccount
    # madvise split failure errno, anon names.
    assert epoch_for("5.15").madvise_split_errno == "ENOMEM"
    assert epoch_for("6.1").madvise_split_errno == "EAGAIN"
    # Anon names: 5.17+ and only with CONFIG_ANON_VMA_NAME (off in Debian's cloud kernels).
    assert not epoch_for("6.1").anon_vma_name
    assert not epoch_for("5.15", anon_vma_name=True).anon_vma_name
    assert epoch_for("6.1", anon_vma_name=True).anon_vma_name
    # brk: 6.13 just_expand; 6.12 merge_new_range; 6.1 expand in place only.
    assert epoch_for("6.13").brk_mode == "just_expand"
    assert epoch_for("6.12").brk_mode == "merge_new_range"
    assert epoch_for("6.1").brk_mode == "expand"
    # 6.18.8 stable: copied_from.
    assert not epoch_for("6.18.7").copied_from_dup and epoch_for("6.18.8").copied_from_dup
    assert epoch_for("7.2.13").copied_from_dup and epoch_for("7.2.13").sticky_guard_flag
    assert epoch_for("6.17").mremap_multi_vma and not epoch_for("6.16").mremap_multi_vma


def _fake_proc(root, release: str, version: str, config: str | None = None) -> None:  # type: ignore[no-untyped-def]
    import gzip

    (root / "sys" / "kernel").mkdir(parents=True)
    (root / "sys" / "kernel" / "osrelease").write_text(release + "\n")
    (root / "version").write_text(f"Linux version {release} (debian-kernel@lists.debian.org) "
                                  f"#1 SMP PREEMPT_DYNAMIC {version} (2026-10-01)\n")
    if config is not None:
        with gzip.open(root / "config.gz", "wt") as fh:
            fh.write(config)


def test_running_debian_kernel_takes_its_patch_level_from_proc_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Debian's uname hides the stable patch level; /proc/version names the package
    # version. 6.18.0 would mean no VM_MAYBE_GUARD (6.18.37 stable) and no copied_from
    # anon_vma duplication (6.18.8 stable).
    from vmascope import host

    release = "6.18.0-9-cloud-amd64"
    e = epoch_for(release)  # not the running kernel: x.y.0
    assert not e.sticky_guard_flag and not e.copied_from_dup
    _fake_proc(tmp_path, release, "Debian 6.18.44-1",
               "CONFIG_MEM_SOFT_DIRTY=y\n# CONFIG_ANON_VMA_NAME is not set\n")
    try:
        host.set_roots(proc=tmp_path)
        assert host.release() == release
        e = host.epoch_for()
        assert e.version == (6, 18, 44) and e.sticky_guard_flag and e.copied_from_dup
        assert e.soft_dirty and not e.anon_vma_name
        # a /proc/version of another series is not taken for this release
        (tmp_path / "version").write_text("Linux version x #1 SMP Debian 6.12.117-1\n")
        host.set_roots(proc=tmp_path)
        assert host.epoch_for(release).version == (6, 18, 0)
        # another release than the running one gets no facts at all
        assert host.epoch_for("6.12.117").version == (6, 12, 117)
    finally:
        host.set_roots(proc="/proc")


def test_build_options_override() -> None:
    e = epoch_for("6.12", anon_vma_name=True, soft_dirty=False)
    assert e.anon_vma_name and not e.soft_dirty
    assert epoch_for("6.12").soft_dirty  # Debian's config


# -- is_mergeable_vma ---------------------------------------------------------------------


def test_flags_must_match_except_soft_dirty() -> None:
    prev = V(0, P)
    cur = V(P, 2 * P, flags=prev.flags | F.VM_SOFTDIRTY)
    assert R.is_mergeable_vma(NEW, vmg_of(cur), prev, True) == ()
    dd = V(P, 2 * P, flags=prev.flags | F.VM_DONTDUMP)
    (r,) = R.is_mergeable_vma(NEW, vmg_of(dd), prev, True)
    assert r.code == "vmflags" and "dd" in r.detail and "only on the right" in r.detail
    assert r.confidence == "certain" and r.rule == "is_mergeable_vma"


def test_vm_account_is_a_flag_difference() -> None:
    prev = V(0, P)
    acc = V(P, 2 * P, flags=prev.flags | F.VM_ACCOUNT)
    assert codes(R.is_mergeable_vma(NEW, vmg_of(acc), prev, True)) == ["vmflags"]


def test_perms_and_uffd_are_their_own_codes() -> None:
    prev = V(0, P)
    ro = V(P, 2 * P, flags=F.VM_READ | F.VM_MAYREAD | F.VM_MAYWRITE)
    assert codes(R.is_mergeable_vma(NEW, vmg_of(ro), prev, True)) == ["perms"]
    uf = V(P, 2 * P, flags=prev.flags | F.VM_UFFD_MISSING)
    assert codes(R.is_mergeable_vma(NEW, vmg_of(uf), prev, True)) == ["uffd"]


def test_sticky_guard_flag_ignored_only_where_sticky() -> None:
    prev = V(0, P)
    gu = V(P, 2 * P, flags=prev.flags | F.VM_MAYBE_GUARD)
    assert R.is_mergeable_vma(epoch_for("6.19"), vmg_of(gu), prev, True) == ()
    assert codes(R.is_mergeable_vma(epoch_for("6.18.1"), vmg_of(gu), prev, True)) == ["vmflags"]


def test_policy_name_file_identity() -> None:
    prev = V(0, P, policy=("bind", (0,)))
    cur = V(P, 2 * P)
    assert codes(R.is_mergeable_vma(NEW, vmg_of(cur), prev, True)) == ["mempolicy"]
    prev = V(0, P, name="foo")
    assert codes(R.is_mergeable_vma(NEW, vmg_of(V(P, 2 * P, name="foo")), prev, True)) == []
    assert codes(R.is_mergeable_vma(NEW, vmg_of(V(P, 2 * P, name="bar")), prev, True)) == [
        "anon_name"]
    f1, f2 = object(), object()
    assert codes(R.is_mergeable_vma(NEW, vmg_of(V(P, 2 * P, file=f2)), V(0, P, file=f1),
                                    True)) == ["file"]


# -- is_mergeable_anon_vma ----------------------------------------------------------------

X, Y = object(), object()


@pytest.mark.parametrize(("src", "tgt", "legacy", "new"), [
    # (source anon, target anon): legacy truth table, then 879bca0a2c4f's.
    (None, None, (), ()),
    (None, X, (), ()),                       # unfaulted source joins a faulted target
    (X, None, ("anon_vma_unfaulted",), ()),  # faulted source into unfaulted target
    (X, X, (), ()),
    (X, Y, ("anon_vma",), ("anon_vma",)),
])
def test_is_mergeable_anon_vma_truth_tables(src: object, tgt: object, legacy: tuple[str, ...],
                                            new: tuple[str, ...]) -> None:
    middle = V(P, 2 * P, anon=src)
    target = V(0, P, anon=tgt)
    assert tuple(codes(R.is_mergeable_anon_vma(LEGACY, vmg_of(middle), target, True))) == legacy
    assert tuple(codes(R.is_mergeable_anon_vma(NEW, vmg_of(middle), target, True))) == new


def test_fork_child_rules() -> None:
    # A fork child's VMA is linked to two anon_vmas (chain of 2).
    child = V(0, P, anon=X, chain_len=2)
    assert R.fork_child(child)
    assert not R.fork_child(V(0, P))  # unfaulted: empty chain, not a fork child
    assert not R.fork_child(V(0, P, anon=X))
    unfaulted = V(P, 2 * P)
    # Legacy: a NULL anon_vma only merges with a target whose chain is singular.
    assert codes(R.is_mergeable_anon_vma(LEGACY, vmg_of(unfaulted), child, True)) == [
        "fork_child"]
    # 6.16: case 2, target is a fork child.
    assert codes(R.is_mergeable_anon_vma(NEW, vmg_of(unfaulted), child, True)) == ["fork_child"]
    # 6.16: case 1, the source is a fork child and the target is unfaulted.
    src = V(P, 2 * P, anon=X, chain_len=2)
    assert codes(R.is_mergeable_anon_vma(NEW, vmg_of(src), V(0, P), True)) == ["fork_child"]


def test_prev_next_cross_check() -> None:
    assert R.anon_vmas_compatible(NEW, V(0, P, anon=X), V(2 * P, 3 * P))
    assert R.anon_vmas_compatible(NEW, V(0, P, anon=X), V(2 * P, 3 * P, anon=X))
    assert not R.anon_vmas_compatible(LEGACY, V(0, P, anon=X), V(2 * P, 3 * P, anon=Y))


# -- pgoff continuity ---------------------------------------------------------------------


def test_can_vma_merge_after_and_before_check_pgoff() -> None:
    prev = V(0, 2 * P, pgoff=10)
    ok = R.Vmg(2 * P, 3 * P, 12, prev.flags)
    assert R.can_vma_merge_after(NEW, ok, prev) == ()
    bad = R.Vmg(2 * P, 3 * P, 13, prev.flags)
    (r,) = R.can_vma_merge_after(NEW, bad, prev)
    assert r.code == "pgoff"
    nxt = V(3 * P, 4 * P, pgoff=20)
    assert R.can_vma_merge_before(NEW, R.Vmg(2 * P, 3 * P, 19, nxt.flags), nxt) == ()
    assert codes(R.can_vma_merge_before(NEW, R.Vmg(2 * P, 3 * P, 18, nxt.flags), nxt)) == [
        "pgoff"]


def test_special_flags_never_merge() -> None:
    for f in (F.VM_IO, F.VM_DONTEXPAND, F.VM_PFNMAP, F.VM_MIXEDMAP):
        r = R.special_reason(NEW, F.VM_READ | f)
        assert r is not None and r.code == "special"
    assert R.special_reason(NEW, F.VM_READ | F.VM_WRITE) is None


# -- fault-time anon_vma reuse --------------------------------------------------------------


def test_anon_vma_compatible_ignores_access_flags_only() -> None:
    a = V(0, P, anon=X)
    b = V(P, 2 * P, flags=F.VM_READ | F.VM_MAYREAD | F.VM_MAYWRITE)  # differs in VM_WRITE
    assert R.anon_vma_compatible(a, b)
    c = V(P, 2 * P, flags=a.flags | F.VM_ACCOUNT)
    assert not R.anon_vma_compatible(a, c)
    d = V(P, 2 * P, pgoff=99)
    assert not R.anon_vma_compatible(a, d)
    e = V(2 * P, 3 * P)  # not adjacent
    assert not R.anon_vma_compatible(a, e)
    # Names are not compared (only the merge compares them).
    assert R.anon_vma_compatible(a, V(P, 2 * P, name="x"))


def test_find_mergeable_anon_vma_tries_next_first() -> None:
    prev, vma, nxt = V(0, P, anon=X), V(P, 2 * P), V(2 * P, 3 * P, anon=Y)
    assert R.find_mergeable_anon_vma(vma, prev, nxt) is Y
    assert R.find_mergeable_anon_vma(vma, prev, V(2 * P, 3 * P)) is X
    # A fork child's anon_vma (chain of 2) is never reused.
    assert R.find_mergeable_anon_vma(vma, None, V(2 * P, 3 * P, anon=Y, chain_len=2)) is None


# -- accounting --------------------------------------------------------------------------


def test_accountable_mapping() -> None:
    assert R.accountable_mapping(F.VM_READ | F.VM_WRITE)
    assert not R.accountable_mapping(F.VM_READ)
    assert not R.accountable_mapping(F.VM_READ | F.VM_WRITE | F.VM_NORESERVE)
    assert not R.accountable_mapping(F.VM_READ | F.VM_WRITE | F.VM_SHARED)


def test_mprotect_account_rules() -> None:
    base = F.VM_MAYREAD | F.VM_MAYWRITE | F.VM_MAYEXEC
    rw = F.VM_READ | F.VM_WRITE
    # Gaining write on an unaccounted private VMA adds VM_ACCOUNT.
    assert R.mprotect_newflags(NEW, base, rw, True, False) & F.VM_ACCOUNT
    # NORESERVE never gains it.
    assert not R.mprotect_newflags(NEW, base | F.VM_NORESERVE, rw, True, False) & F.VM_ACCOUNT
    acc = base | rw | F.VM_ACCOUNT
    # Dropping write: 6.7 gives it back on unfaulted anonymous memory only.
    assert not R.mprotect_newflags(NEW, acc, F.VM_READ, True, False) & F.VM_ACCOUNT
    assert R.mprotect_newflags(NEW, acc, F.VM_READ, True, True) & F.VM_ACCOUNT
    assert R.mprotect_newflags(epoch_for("6.6"), acc, F.VM_READ, True, False) & F.VM_ACCOUNT


def test_flag_names_in_kernel_print_order() -> None:
    f = F.VM_READ | F.VM_WRITE | F.VM_MAYREAD | F.VM_MAYWRITE | F.VM_MAYEXEC | F.VM_ACCOUNT
    assert F.flag_names(f) == ["rd", "wr", "mr", "mw", "me", "ac"]
    # 6.18.44 prints "gu" (bit 11) before "nr".
    assert F.flag_names(F.VM_READ | F.VM_NORESERVE | F.VM_MAYBE_GUARD) == ["rd", "gu", "nr"]
    assert F.flags_from_names(["rd", "wr", "ac"]) == F.VM_READ | F.VM_WRITE | F.VM_ACCOUNT


# -- explain_pair -------------------------------------------------------------------------

RW = frozenset({"rd", "wr", "mr", "mw", "me", "ac"})


def test_explain_identical_unfaulted_pair_would_merge() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW, smaps={"Anonymous": 0})
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW, smaps={"Anonymous": 0})
    assert explain_pair(a, b, NEW) == []
    assert explain_pair(a, b, LEGACY) == []


def test_explain_soft_dirty_never_counts() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW | {"sd"})
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW)
    assert explain_pair(a, b, NEW) == []


def test_explain_flag_difference_names_the_mnemonic() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW | {"dd"})
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW)
    (r,) = explain_pair(a, b, NEW)
    assert r.code == "vmflags" and "dd" in r.detail and "only on the left" in r.detail
    assert r.confidence == "certain"


def test_explain_perms_and_gap() -> None:
    a = Vma(0x1000, 0x2000, "r--p", flags=None)
    b = Vma(0x3000, 0x4000, "rw-p", flags=None)
    got = codes(explain_pair(a, b, NEW))
    assert got == ["not_adjacent", "perms"]


def test_explain_anon_from_smaps_is_inferred() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW, smaps={"Anonymous": 4096})
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW, smaps={"Anonymous": 8192})
    (r,) = explain_pair(a, b, NEW)
    assert (r.code, r.confidence) == ("anon_vma", "inferred")
    # One side faulted, the other not: a reason before 6.16 only, citing the fix.
    c = Vma(0x2000, 0x3000, "rw-p", flags=RW, smaps={"Anonymous": 0})
    (r,) = explain_pair(a, c, LEGACY)
    assert (r.code, r.confidence) == ("anon_vma_unfaulted", "inferred")
    assert "879bca0a2c4f" in r.citation
    assert explain_pair(a, c, NEW) == []
    # The other way round: unfaulted on the left, faulted on the right.
    left = Vma(0x1000, 0x2000, "rw-p", flags=RW, smaps={"Anonymous": 0})
    right = Vma(0x2000, 0x3000, "rw-p", flags=RW, smaps={"Anonymous": 4096})
    (r,) = explain_pair(left, right, LEGACY)
    assert r.code == "anon_vma_unfaulted" and "the right VMA has an anon_vma" in r.detail


def test_explain_anon_ids_known_are_certain() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW, anon_vma=1, offset=0x1000)
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW, anon_vma=2, offset=0x2000)
    (r,) = explain_pair(a, b, NEW)
    assert (r.code, r.confidence) == ("anon_vma", "certain")
    same = Vma(0x2000, 0x3000, "rw-p", flags=RW, anon_vma=1, offset=0x2000)
    assert explain_pair(a, same, NEW) == []
    none = Vma(0x2000, 0x3000, "rw-p", flags=RW, anon_vma=None, offset=0x2000)
    assert codes(explain_pair(a, none, LEGACY)) == ["anon_vma_unfaulted"]


def test_explain_pgoff_of_simulated_anon_and_files() -> None:
    # Simulated anonymous VMAs carry pgoff in offset: a moved faulted VMA is not linear.
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW, anon_vma=1, offset=0x1000)
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW, anon_vma=1, offset=0x9000)
    assert codes(explain_pair(a, b, NEW)) == ["pgoff"]
    # Real maps print 0 for anonymous memory: no pgoff verdict.
    c = Vma(0x1000, 0x2000, "rw-p", flags=RW)
    d = Vma(0x2000, 0x3000, "rw-p", flags=RW)
    assert explain_pair(c, d, NEW) == []
    # Same file, offsets not continuous -> pgoff; different inode -> file.
    f1 = Vma(0x1000, 0x2000, "r--p", 0x0, 0x801, 42, "/lib/x.so", flags=frozenset({"rd", "mr"}))
    f2 = Vma(0x2000, 0x3000, "r--p", 0x5000, 0x801, 42, "/lib/x.so",
             flags=frozenset({"rd", "mr"}))
    assert codes(explain_pair(f1, f2, NEW)) == ["pgoff"]
    f3 = Vma(0x2000, 0x3000, "r--p", 0x1000, 0x801, 43, "/lib/y.so",
             flags=frozenset({"rd", "mr"}))
    assert codes(explain_pair(f1, f3, NEW)) == ["file"]


def test_explain_name_policy_special() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", name="[anon:gc]", flags=RW, policy="bind:0")
    b = Vma(0x2000, 0x3000, "rw-p", name="[anon:jit]", flags=RW, policy="default")
    assert sorted(codes(explain_pair(a, b, NEW))) == ["anon_name", "mempolicy"]
    io = Vma(0x2000, 0x3000, "rw-s", flags=frozenset({"rd", "wr", "sh", "io", "pf"}),
             dev=5, inode=9, name="/dev/mem")
    assert "special" in codes(explain_pair(a, io, NEW))


def test_explain_names_unknown_mnemonics() -> None:
    a = Vma(0x1000, 0x2000, "rw-p", flags=RW | {"zz"})
    b = Vma(0x2000, 0x3000, "rw-p", flags=RW)
    (r,) = explain_pair(a, b, NEW)
    assert r.code == "vmflags" and "zz" in r.detail and "only on the left" in r.detail


def test_docs_table_is_generated_from_the_changes() -> None:
    from pathlib import Path

    from vmascope.kernel import changes

    text = (Path(__file__).parent.parent / "docs" / "kernel-epochs.md").read_text()
    begin = "<!-- BEGIN generated: kernel changes -->\n"
    end = "<!-- END generated: kernel changes -->"
    assert text[text.index(begin) + len(begin):text.index(end)] == changes.markdown_table()


def test_every_change_has_a_commit_or_says_why_it_is_assumed() -> None:
    import re

    from vmascope.kernel import changes
    from vmascope.kernel.epochs import Epoch

    switches = {f.name for f in __import__("dataclasses").fields(Epoch)}
    for c in changes.CHANGES:
        assert c.switch in switches and c.switch in changes.BASE, c
        if c.commit is None:
            assert len(c.note) > 40, f"{c.switch}: assumed without saying why"
        else:
            assert re.fullmatch(r"[0-9a-f]{12,40}", c.commit), c
        assert all(v in changes.LAB for v in c.verified), c



def test_stable_backports_switch_at_their_patch_level() -> None:
    # 6.18.8 took the copied_from fix (stable a4d9dbfc1bab), 6.18.37 VM_MAYBE_GUARD,
    # 6.6.30 the MADV_POPULATE walk; the releases just before did not.
    assert not epoch_for("6.18.7").copied_from_dup and epoch_for("6.18.8").copied_from_dup
    assert not epoch_for("6.18.36").sticky_guard_flag
    assert epoch_for("6.18.37").sticky_guard_flag
    assert epoch_for("6.6.29").populate_in_walk and not epoch_for("6.6.30").populate_in_walk
    assert epoch_for("6.8").populate_in_walk and not epoch_for("6.9").populate_in_walk
    # 2555283eb40d is in 6.0: every 6.x has the num_children reuse test
    assert epoch_for("5.19").clone_reuse == "degree"
    assert epoch_for("6.0").clone_reuse == epoch_for("6.1").clone_reuse == "num_children"
