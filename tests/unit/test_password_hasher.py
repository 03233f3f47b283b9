"""PasswordHasher: argon2id on its own bounded pool of threads, in every process."""

from __future__ import annotations

import os
import threading
import time

from idp.identities.passwords import PasswordHasher

SMALL = (1024, 1, 1)  # fast parameters: the behaviour, not the cost, is under test


def test_hash_and_verify_round_trip():
    hasher = PasswordHasher(*SMALL)
    stored = hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert hasher.verify("correct horse battery staple", stored) == (True, None)
    assert hasher.verify("wrong", stored) == (False, None)
    assert hasher.verify("anything", None) == (False, None)


def test_outdated_parameters_are_upgraded_on_verify():
    old = PasswordHasher(1024, 1, 1).hash("pw-to-upgrade-1234")
    ok, new_hash = PasswordHasher(2048, 1, 1).verify("pw-to-upgrade-1234", old)
    assert ok and new_hash and "m=2048" in new_hash


def test_at_most_concurrency_hashes_at_once():
    hasher = PasswordHasher(*SMALL, concurrency=2)
    running, peak, lock = [0], [0], threading.Lock()
    original = hasher._context.hash

    def counting(password):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.02)  # long enough that eight callers overlap
            return original(password)
        finally:
            with lock:
                running[0] -= 1

    hasher._context.hash = counting
    callers = [threading.Thread(target=hasher.hash, args=(f"pw-{i}-long-enough",)) for i in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    # Eight requests at once, but never more than two hashes: memory stays two hashes' worth.
    assert peak[0] == 2
    threads = {name for name in (t.name for t in threading.enumerate()) if name.startswith("argon2")}
    assert 1 <= len(threads) <= 2


def test_a_forked_worker_hashes_on_a_pool_of_its_own():
    hasher = PasswordHasher(*SMALL)
    hasher.hash("start the parent's pool thread")  # the parent now has a live hashing thread
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread does not exist here; a hash must still complete
        try:
            ok = hasher.verify("forked", hasher.hash("forked"))[0]
            os._exit(0 if ok else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
