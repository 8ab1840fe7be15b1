"""Policy rules (deterministic with seeds), the state machine, failures and thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from simpletasks.tasks.edge.estimate import interpolate
from simpletasks.tasks.edge.policy import FileState, InvalidTransition, make_policy, policy_names

ALL = policy_names()


def _policy(name, n=0, size=1000, scores=None, **kw):
    p = make_policy(name, seed=1, oracle_scores=scores, **kw)
    for i in range(n):
        p.add(i, size)
    return p


def _measure(p, index, saved, cpu=1.0, size=1000):
    """Force ``index`` through pre-processing with a given saving."""
    p._state[index] = FileState.PREPROCESSING  # a test shortcut around the pick rule
    p.preprocessed(index, size - saved, cpu)


# ------------------------------------------------------------------ estimate (HASTE rules)
def test_estimate_is_prior_until_more_than_three_positive_scores():
    known = np.full(10, np.nan)
    known[[1, 3, 5]] = [10.0, 20.0, 30.0]
    known[7] = -5.0  # non-positive: left out
    assert (interpolate(known, 10) == 1.0).all()
    known[8] = 40.0
    est = interpolate(known, 10)
    assert est[0] == 10.0  # constant before the first known
    assert est[2] == pytest.approx(15.0)  # linear between 1 and 3
    assert est[7] == pytest.approx(30 + 10 * 2 / 3)  # 7 (non-positive) skipped: 5..8 line
    assert est[9] == 40.0  # constant after the last known


def test_policy_refits_after_each_measurement():
    p = _policy("splines-random", n=10)
    for i, s in zip([0, 3, 6], [100, 400, 700], strict=True):
        _measure(p, i, s)
    assert p.estimates() == [1.0] * 10
    _measure(p, 9, 1000)
    est = p.estimates()
    assert est[1] == pytest.approx(200.0) and est[9] == 1000.0
    assert p.known()[3] == 400.0 and p.known()[1] is None


# ------------------------------------------------------------------ picks
def test_natural_picks_lowest_index():
    p = _policy("natural", n=5)
    assert [p.next_preprocess() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert p.next_preprocess() is None


def test_upload_only_never_preprocesses():
    p = _policy("upload-only", n=3)
    assert p.next_preprocess() is None
    assert [p.next_upload() for _ in range(3)] == [0, 1, 2]
    assert p.next_upload() is None


def test_oracle_climbs_on_true_score_and_uploads_lowest():
    scores = [5.0, 50.0, 1.0, 30.0]
    p = _policy("oracle", n=4, scores=scores)
    assert p.next_preprocess() == 1
    assert p.next_upload() == 2
    with pytest.raises(ValueError, match="oracle_scores"):
        make_policy("oracle")


def test_upload_prefers_processed_lowest_index_then_lowest_estimate():
    p = _policy("splines-random", n=12)
    for i, s in zip([0, 4, 8, 11], [100, 500, 900, 300], strict=True):
        _measure(p, i, s)
    assert p.next_upload() == 0  # processed files first, lowest index
    assert [p.next_upload() for _ in range(3)] == [4, 8, 11]
    assert p.next_upload() == 1  # lowest estimate among unprocessed (index 1: 200)


def test_splines_random_every_fifth_pick_searches():
    p = _policy("splines-random", n=200)
    for i, s in zip([0, 50, 100, 150], [10, 20, 999, 20], strict=True):
        _measure(p, i, s)
    picks = [p.next_preprocess() for _ in range(10)]
    est = np.array(p.estimates())
    climbs = [picks[k] for k in range(10) if (k + 1) % 5]
    assert all(abs(i - 100) <= 5 for i in climbs)  # climbing the peak at 100
    assert est[picks[4]] <= est.max()
    again = _policy("splines-random", n=200)
    for i, s in zip([0, 50, 100, 150], [10, 20, 999, 20], strict=True):
        _measure(again, i, s)
    assert [again.next_preprocess() for _ in range(10)] == picks  # same seed, same picks


def test_splines_block_searches_blocks_of_15_then_climbs():
    p = _policy("splines-block", n=45)
    assert p.next_preprocess() == 0
    assert p.next_preprocess() == 15  # block 0 has work in progress
    assert p.next_preprocess() == 30
    p.preprocessed(0, 900, 1.0)
    p.preprocessed(15, 100, 1.0)
    p.preprocessed(30, 500, 1.0)
    # every block has a known score: climb on the estimate (still the prior: ties -> first)
    assert p.next_preprocess() == 1


def test_random_is_reproducible_and_seed_dependent():
    def picks(seed):
        p = make_policy("random", seed=seed)
        for i in range(50):
            p.add(i, 1000)
        return [p.next_preprocess() for _ in range(10)] + [p.next_upload() for _ in range(10)]

    assert picks(3) == picks(3)
    assert picks(3) != picks(4)


def test_splines_searches_far_gaps_then_climbs():
    p = _policy("splines", n=100)
    first = [p.next_preprocess() for _ in range(4)]
    assert len(set(first)) == 4
    gaps = np.diff(sorted(first))
    assert gaps.min() >= 12  # spread out, not neighbours


def test_content_uses_the_hint_before_any_measurement():
    p = make_policy("content", seed=0)
    for i, h in enumerate([0.1, 0.5, 0.3, 0.0]):
        p.add(i, 1000, hint=h)
    assert p.next_preprocess() == 1
    assert p.next_upload() == 3


def test_every_policy_drains_a_stream():
    scores = list(range(30))
    for name in ALL:
        p = make_policy(name, seed=2, oracle_scores=scores)
        for i in range(30):
            p.add(i, 1000, hint=i / 30)
        done = 0
        while done < 30:
            i = p.next_preprocess()
            if i is not None:
                p.preprocessed(i, 900, 0.5)
            j = p.next_upload()
            if j is not None:
                p.uploaded(j)
                done += 1
        assert p.counts()["UPLOADED"] == 30, name


# ------------------------------------------------------------------ state machine and bad input
def test_state_machine_and_counts():
    p = _policy("natural", n=3)
    assert p.state(0) is FileState.WAITING_UNPROCESSED
    i = p.next_preprocess()
    assert p.state(i) is FileState.PREPROCESSING
    p.preprocessed(i, 600, 0.5)
    assert p.state(i) is FileState.WAITING_PROCESSED
    assert p.use_processed(i) and p.upload_size(i) == 600
    assert p.known()[i] == pytest.approx(800.0)
    assert p.next_upload() == i
    assert p.state(i) is FileState.UPLOADING
    p.uploaded(i)
    assert p.state(i) is FileState.UPLOADED
    assert p.counts() == {
        "WAITING_UNPROCESSED": 2,
        "PREPROCESSING": 0,
        "WAITING_PROCESSED": 0,
        "UPLOADING": 0,
        "UPLOADED": 1,
    }
    assert len(p) == 3


def test_bigger_output_is_recorded_but_original_sent():
    p = _policy("natural", n=1)
    p.next_preprocess()
    p.preprocessed(0, 1500, 0.5)
    assert p.known()[0] == pytest.approx(-1000.0)
    assert not p.use_processed(0)
    assert p.upload_size(0) == 1000
    assert p.next_upload() == 0  # still "processed": it goes first


def test_preprocess_failed_is_never_offered_again():
    p = _policy("natural", n=2)
    assert p.next_preprocess() == 0
    p.preprocess_failed(0)
    assert p.state(0) is FileState.WAITING_UNPROCESSED
    assert p.next_preprocess() == 1
    assert p.next_preprocess() is None
    assert not p.use_processed(0)
    assert p.next_upload() == 0  # the original still goes up


def test_upload_failed_returns_to_previous_state():
    p = _policy("natural", n=2)
    p.next_preprocess()
    p.preprocessed(0, 500, 1.0)
    assert p.next_upload() == 0
    p.upload_failed(0)
    assert p.state(0) is FileState.WAITING_PROCESSED
    assert p.next_upload() == 0
    p.uploaded(0)
    assert p.next_upload() == 1
    p.upload_failed(1)
    assert p.state(1) is FileState.WAITING_UNPROCESSED
    assert p.next_preprocess() == 1  # unprocessed again: may still be processed


@pytest.mark.parametrize("name", ALL)
def test_impossible_reports_raise_and_leave_state_alone(name):
    p = make_policy(name, seed=0, oracle_scores=[1.0, 2.0])
    p.add(0, 1000)
    p.add(1, 1000)
    with pytest.raises(ValueError, match="already added"):
        p.add(0, 1000)
    with pytest.raises(ValueError):
        p.add(-1, 10)
    with pytest.raises(ValueError):
        p.add(5, -10)
    with pytest.raises(InvalidTransition):
        p.preprocessed(0, 10, 1.0)
    with pytest.raises(InvalidTransition):
        p.uploaded(0)
    with pytest.raises(InvalidTransition):
        p.upload_failed(1)
    with pytest.raises(InvalidTransition):
        p.preprocess_failed(1)
    with pytest.raises(KeyError):
        p.state(7)
    with pytest.raises(KeyError):
        p.uploaded(99)
    assert p.counts()["WAITING_UNPROCESSED"] == 2
    j = p.next_upload()
    with pytest.raises(ValueError):
        p.preprocessed(j, 10, -1.0)
    p.uploaded(j)
    assert p.state(j) is FileState.UPLOADED


def test_unknown_policy_name():
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")
    assert ALL[0] == "splines"


def test_out_of_order_arrivals_and_gaps():
    p = _policy("natural")
    p.add(5, 100)
    p.add(2, 100)
    assert len(p) == 2
    assert p.next_preprocess() == 2
    with pytest.raises(KeyError):
        p.state(3)


# ------------------------------------------------------------------ thread safety
@pytest.mark.parametrize("name", ["splines", "splines-block", "random"])
def test_concurrent_lanes_upload_each_file_exactly_once(name):
    n = 400
    p = make_policy(name, seed=0)
    uploaded: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def arrive():
        for i in range(n):
            p.add(i, 1000 + i % 7)

    def cpu():
        while not stop.is_set():
            i = p.next_preprocess()
            if i is not None:
                if i % 13 == 0:
                    p.preprocess_failed(i)
                else:
                    p.preprocessed(i, 700 + (i * 37) % 200, 0.01)

    def up():
        k = 0
        while not stop.is_set():
            i = p.next_upload()
            if i is None:
                continue
            k += 1
            if k % 11 == 0:
                p.upload_failed(i)
                continue
            p.uploaded(i)
            with lock:
                uploaded.append(i)
            if len(uploaded) == n:
                stop.set()

    threads = [threading.Thread(target=f) for f in (arrive, cpu, cpu, up, up, up)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert sorted(uploaded) == list(range(n))
    assert p.counts()["UPLOADED"] == n


# ------------------------------------------------------------------ end game (splines, content)
def test_lane_rates_infer_the_link_from_reports():
    from simpletasks.tasks.edge.endgame import LaneRates

    rates = LaneRates()
    assert rates.link_rate() is None and rates.cpu_per_byte() is None
    rates.started(1)
    rates.started(2)  # two jobs at once: two cores seen
    rates.finished(1000, 2.0)
    rates.finished(1000, 2.0)
    assert rates.link_rate() is None  # nothing uploaded yet
    rates.sent(6000)
    assert rates.link_rate() == pytest.approx(6000 / 2.0)  # 4 CPU-s on 2 cores = 2 s
    assert rates.cpu_per_byte() == pytest.approx(2e-3)
    assert LaneRates(cores=4, cpu_seconds=4.0, uploaded_bytes=10).link_rate() == 10.0
    assert LaneRates(bandwidth=5e6).link_rate() == 5e6


def test_first_file_goes_up_raw_rather_than_idle_the_link():
    p = make_policy("splines")
    p.add(0, 1000)
    assert p.next_preprocess() is None  # the link has nothing else: it takes file 0
    assert p.next_upload() == 0
    p.add(1, 1000)
    assert p.next_preprocess() == 1  # the link is busy now
    off = make_policy("splines", end_game=False)
    off.add(0, 1000)
    assert off.next_preprocess() == 0


@pytest.mark.parametrize(("saved", "starts"), [(100_000, False), (900_000, True)])
def test_end_game_weighs_the_link_wait_against_the_saving(saved, starts):
    # 1 MB/s link, 1 core; file 0 took 0.8 CPU-s and is uploading (half done on average);
    # file 1 would take 0.8 CPU-s: saving 0.1 MB makes the link wait 0.8 - 0.45 s for 0.1 s
    # of link time (skip); saving 0.9 MB makes it wait 0.8 - 0.05 s for 0.9 s (start)
    p = make_policy("splines", bandwidth_mbps=1.0, cores=1)
    p.add(0, 1_000_000)
    p.add(1, 1_000_000)
    _measure(p, 0, saved, cpu=0.8, size=1_000_000)
    assert p.next_upload() == 0
    assert (p.next_preprocess() == 1) is starts
    q = make_policy("splines", bandwidth_mbps=1.0, cores=1, end_game=False)
    q.add(0, 1_000_000)
    q.add(1, 1_000_000)
    _measure(q, 0, saved, cpu=0.8, size=1_000_000)
    assert q.next_upload() == 0
    assert q.next_preprocess() == 1


def test_end_game_counts_only_confirmed_uploads():
    p = make_policy("splines")
    for i in range(3):
        p.add(i, 1000)
    j = p.next_upload()
    p.upload_failed(j)
    assert p._rates.uploaded_bytes == 0
    j = p.next_upload()
    p.uploaded(j)
    assert p._rates.uploaded_bytes == 1000
    with pytest.raises(InvalidTransition):
        p.uploaded(j)
    assert p._rates.uploaded_bytes == 1000


@pytest.mark.parametrize("bad", [{"bandwidth_mbps": 0}, {"bandwidth_mbps": -1.0}, {"cores": 0}])
def test_end_game_options_are_checked(bad):
    with pytest.raises(ValueError):
        make_policy("splines", **bad)
