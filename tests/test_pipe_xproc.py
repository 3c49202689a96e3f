"""Pipes between unrelated processes: data, ordering under load, waking,
a peer killed with SIGKILL, select/selectors/asyncio, cleanup."""

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

import pynetmap
from pynetmap import POLLHUP, POLLIN, POLLOUT
from pynetmap.registry import transaction

SENDER = textwrap.dedent("""
    import sys, time, numpy as np, pynetmap
    from pynetmap import POLLOUT
    name, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with pynetmap.open(name) as p:
        r = p.tx_rings[0]
        seq = 0
        deadline = time.monotonic() + 60
        while seq < count and time.monotonic() < deadline:
            b = r.reserve(min(batch, count - seq))
            if not b.count:
                p.poll(POLLOUT, 1000)
                continue
            idx = b.buf_idx
            r.bufs[idx, :8] = (seq + np.arange(b.count, dtype="<u8")).view(np.uint8).reshape(-1, 8)
            b.len = 64
            r.advance(b.count)
            p.txsync()
            seq += b.count
        while r.tx_pending() and time.monotonic() < deadline:
            p.poll(POLLOUT, 100)
    print("sent", seq, flush=True)
""")


def uniq():
    return "x" + uuid.uuid4().hex[:10]


def spawn(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cross_process_in_order_under_load():
    p = uniq()
    count = 200_000
    with pynetmap.open(f"netmap:{p}}}0@conf:slots=512") as rcv:
        proc = spawn(SENDER, f"netmap:{p}{{0", count, 256)
        try:
            r = rcv.rx_rings[0]
            got = 0
            deadline = time.monotonic() + 60
            while got < count and time.monotonic() < deadline:
                if not rcv.poll(POLLIN, 1000) & POLLIN:
                    continue
                b = r.receive()
                seqs = r.bufs[b.buf_idx, :8].copy().view("<u8").ravel()
                assert np.array_equal(seqs, got + np.arange(b.count)), "reordered or corrupt"
                assert (b.len == 64).all()
                got += b.count
                r.release(b.count)
            rcv.rxsync()  # hand the last slots back, or the sender waits for them
            assert got == count
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert out.split() == ["sent", str(count)]
        finally:
            proc.kill()
            proc.wait()


def test_sleeping_receiver_is_woken():
    p = uniq()
    with pynetmap.open(f"netmap:{p}}}0") as rcv:
        proc = spawn(textwrap.dedent("""
            import sys, time, pynetmap
            with pynetmap.open(sys.argv[1]) as p:
                time.sleep(0.5)
                p.tx_rings[0].send([b"x" * 60])
                p.txsync()
                time.sleep(0.5)
        """), f"netmap:{p}{{0")
        try:
            t0 = time.monotonic()
            rev = rcv.poll(POLLIN, 10_000)
            assert rev & POLLIN
            assert time.monotonic() - t0 < 5  # woken, not timed out
            assert rcv.rx_rings[0].receive().frames() == [b"x" * 60]
        finally:
            proc.wait(timeout=10)


def test_sigkilled_peer_gives_pollhup_and_region_goes():
    p = uniq()
    rcv = pynetmap.open(f"netmap:{p}}}0@conf:slots=64")
    region_name = rcv.region.name.lstrip("/")
    proc = spawn(SENDER, f"netmap:{p}{{0", 10**9, 32)
    try:
        r = rcv.rx_rings[0]
        got = 0
        while got < 1000:  # mid-stream
            assert rcv.poll(POLLIN, 5000) & POLLIN
            b = r.receive()
            got += b.count
            r.release(b.count)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        rev = 0
        while time.monotonic() - t0 < 3:
            rev = rcv.poll(POLLIN, 100)
            if rev & POLLHUP:
                break
            r.release(r.receive().count)
        assert rev & POLLHUP
        assert time.monotonic() - t0 < 1.5
    finally:
        proc.kill()
        proc.wait()
        rcv.close()
    with transaction() as st:
        assert f"{p}{{0" not in st["ports"] and p not in st["parents"]
    if os.path.isdir("/dev/shm"):
        assert not os.path.exists(f"/dev/shm/{region_name}")


def test_survivor_sender_blocked_on_full_ring_sees_hup():
    p = uniq()
    snd = pynetmap.open(f"netmap:{p}{{0@conf:slots=8")
    proc = spawn("import sys, time, pynetmap\np = pynetmap.open(sys.argv[1])\n"
                 "print('up', flush=True)\ntime.sleep(60)", f"netmap:{p}}}0")
    try:
        assert proc.stdout.readline().strip() == "up"
        snd.tx_rings[0].send([b"y" * 60] * 7)
        snd.txsync()
        assert snd.poll(POLLOUT, 0) == 0  # full, peer not reading
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        rev = snd.poll(POLLOUT, 3000)
        assert rev & POLLHUP and time.monotonic() - t0 < 1.5
    finally:
        proc.kill()
        proc.wait()
        snd.close()


def test_selectors_and_arm():
    p = uniq()
    with pynetmap.open(f"netmap:{p}{{0") as a, pynetmap.open(f"netmap:{p}}}0") as b:
        sel = selectors.DefaultSelector()
        sel.register(b.fileno(), selectors.EVENT_READ)
        assert b.arm(POLLIN) == 0
        assert sel.select(0.05) == []  # nothing published
        a.tx_rings[0].send([b"z" * 60])
        a.txsync()
        assert sel.select(2)  # the publish woke the selector
        b.rxsync()  # consumes the wake-up
        assert b.rx_rings[0].space() == 1
        b.rx_rings[0].release(1)
        b.rxsync()
        assert b.arm(POLLIN) == 0
        assert sel.select(0.05) == []
        sel.close()


def test_asyncio_add_reader():
    p = uniq()

    async def main():
        loop = asyncio.get_running_loop()
        with pynetmap.open(f"netmap:{p}{{0") as a, pynetmap.open(f"netmap:{p}}}0") as b:
            got = asyncio.Event()
            received = []

            def on_readable():
                b.rxsync()
                r = b.rx_rings[0]
                batch = r.receive()
                received.extend(batch.frames())
                r.release(batch.count)
                if received:
                    got.set()
                b.arm(POLLIN)

            assert b.arm(POLLIN) == 0
            loop.add_reader(b.fileno(), on_readable)
            loop.call_later(0.05, lambda: (a.tx_rings[0].send([b"q" * 60]), a.txsync()))
            await asyncio.wait_for(got.wait(), 5)
            loop.remove_reader(b.fileno())
            assert received == [b"q" * 60]
            # the coroutine flavour
            loop.call_later(0.05, lambda: (a.tx_rings[0].send([b"w" * 60]), a.txsync()))
            rev = await b.wait(POLLIN, 5000)
            assert rev & POLLIN

    asyncio.run(main())


@pytest.mark.skipif(sys.platform != "linux", reason="liveness tokens are Linux-only")
def test_stale_region_of_dead_process_is_reclaimed():
    p = uniq()
    proc = spawn("import sys, time, pynetmap\np = pynetmap.open(sys.argv[1])\n"
                 "print(p.region.name, flush=True)\ntime.sleep(60)", f"netmap:{p}{{0")
    name = proc.stdout.readline().strip().lstrip("/")
    proc.kill()
    proc.wait()
    assert os.path.exists(f"/dev/shm/{name}")
    with transaction():  # any registry use sweeps
        pass
    assert not os.path.exists(f"/dev/shm/{name}")
