"""The ring protocol against a small reference model (spec §2).

Hypothesis drives a pipe with random actions -- legal advances, arbitrary
head/cur/tail values, corrupted slots, syncs on either side -- and after
every sync compares the rings with a model that states the rules
differently from the implementation: in terms of circular distances
("head moves forward inside the user's part, cur lies in [head, tail]").
"""

import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pynetmap
from pynetmap import RingError
from pynetmap.kring import rx_prologue, tx_prologue

N = 8


def d(a, b, n=N):
    return (b - a) % n


def model_legal(head, cur, lo, hi):
    """User may set head in [lo, hi] (circular) and cur in [head, hi]."""
    if head >= N or cur >= N:
        return False
    return d(lo, head) <= d(lo, hi) and d(head, cur) <= d(head, hi)


@given(st.integers(0, 2 * N), st.integers(0, 2 * N), st.integers(0, N - 1),
       st.integers(0, N - 1))
def test_prologues_match_the_distance_model(head, cur, lo, hi):
    assert tx_prologue(N, lo, hi, lo, hi, head, cur) == model_legal(head, cur, lo, hi)
    assert rx_prologue(N, lo, hi, head, cur) == model_legal(head, cur, lo, hi)


def test_prologue_rejects_bad_kernel_state():
    assert not tx_prologue(N, N, 0, 0, 0, 0, 0)
    assert not rx_prologue(N, 0, N, 0, 0)


action = st.one_of(
    st.tuples(st.just("tx_advance"), st.integers(0, N)),
    st.tuples(st.just("rx_advance"), st.integers(0, N)),
    st.tuples(st.just("tx_set"), st.integers(0, N + 2), st.integers(0, N + 2),
              st.integers(0, N + 2)),
    st.tuples(st.just("rx_set"), st.integers(0, N + 2), st.integers(0, N + 2)),
    st.tuples(st.just("corrupt"), st.integers(0, N - 1), st.sampled_from(["idx0", "idx1",
                                                                          "idxbig", "len"])),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40))
def test_pipe_follows_the_model(actions):
    p = "m" + uuid.uuid4().hex[:10]
    with pynetmap.open(f"netmap:{p}{{0@conf:slots={N}") as a, \
            pynetmap.open(f"netmap:{p}}}0") as b:
        tx, rx = a.tx_rings[0], b.rx_rings[0]
        nbufs = a.region.nbufs
        # model state
        t_hwcur, t_hwtail = 0, N - 1
        r_hwcur, r_hwtail = 0, 0
        sent_idx = {}  # slot -> buf_idx the receiver must see

        def tx_sync():
            nonlocal t_hwcur, t_hwtail, r_hwtail
            head, cur = tx.head, tx.cur
            legal = model_legal(head, cur, t_hwcur, t_hwtail)
            rng = [(t_hwcur + i) % N for i in range(d(t_hwcur, head))] if legal else []
            bad = any(not (2 <= tx.slot_buf_idx[s] < nbufs) or tx.slot_len[s] > 2048
                      for s in rng)
            before = tx.slots.copy()
            if legal and not bad:
                a.txsync()
                for s in rng:
                    sent_idx[s] = int(before["buf_idx"][s])
                t_hwcur = head
                r_hwtail = head
                t_hwtail = (r_hwcur - 1) % N
                assert (tx.head, tx.cur, tx.tail) == (head, cur, t_hwtail)
            else:
                with pytest.raises(RingError):
                    a.txsync()
                assert (tx.head, tx.cur, tx.tail) == (t_hwcur, t_hwcur, t_hwtail)
                badi = (before["buf_idx"] < 2) | (before["buf_idx"] >= nbufs)
                assert (tx.slot_buf_idx[badi] == 0).all() and (tx.slot_len[badi] == 0).all()
                longl = ~badi & (before["len"] > 2048)
                assert (tx.slot_len[longl] == 0).all()
            assert tx.kring.hwcur == t_hwcur and tx.kring.hwtail == t_hwtail

        def rx_sync():
            nonlocal r_hwcur
            head, cur = rx.head, rx.cur
            legal = model_legal(head, cur, r_hwcur, r_hwtail)
            if legal:
                b.rxsync()
                r_hwcur = head
                assert (rx.head, rx.cur, rx.tail) == (head, cur, r_hwtail)
            else:
                with pytest.raises(RingError):
                    b.rxsync()
                assert (rx.head, rx.cur, rx.tail) == (r_hwcur, r_hwcur, r_hwtail)
            # what the receiver owns is exactly what was sent
            for i in range(d(rx.head, rx.tail)):
                s = (rx.head + i) % N
                assert rx.slot_buf_idx[s] == sent_idx[s]
            assert rx.kring.hwcur == r_hwcur and rx.kring.hwtail == r_hwtail

        for act in actions:
            kind = act[0]
            if kind == "tx_advance":
                k = min(act[1], tx.space())
                tx.slot_len[[(tx.head + i) % N for i in range(k)]] = 60
                tx.advance(k)
                tx_sync()
            elif kind == "rx_advance":
                rx.advance(min(act[1], rx.space()))
                rx_sync()
            elif kind == "tx_set":
                tx.head, tx.cur = act[1], act[2]
                tx._hdr[7] = act[3]  # a user scribbling on tail: restored or reset
                tx_sync()
            elif kind == "rx_set":
                rx.head, rx.cur = act[1], act[2]
                rx_sync()
            else:
                s, how = act[1], act[2]
                if how == "len":
                    tx.slot_len[s] = 4000
                else:
                    tx.slot_buf_idx[s] = {"idx0": 0, "idx1": 1, "idxbig": nbufs}[how]
                    tx.slot_flags[s] = 0
        assert np.all(rx.slot_buf_idx < nbufs)


def test_circular_gather_scatter_and_buf_changed_clear() -> None:
    from pynetmap.constants import NS_BUF_CHANGED, NS_MOREFRAG
    from pynetmap.kring import clear_buf_changed, gather, scatter

    n = 8
    col = np.arange(n, dtype=np.uint32)
    assert gather(col, 6, 2, n).tolist() == [6, 7, 0, 1]  # wraps
    assert gather(col, 2, 5, n).tolist() == [2, 3, 4]
    scatter(col, 6, np.array([60, 70, 80], np.uint32), n)
    assert col.tolist() == [80, 1, 2, 3, 4, 5, 60, 70]
    flags = np.full(n, NS_BUF_CHANGED | NS_MOREFRAG, np.uint16)
    clear_buf_changed(flags, 7, 1, n)
    assert flags.tolist() == [NS_MOREFRAG] + [NS_BUF_CHANGED | NS_MOREFRAG] * 6 + [NS_MOREFRAG]
