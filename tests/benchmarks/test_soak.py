"""The kill-and-resume soak (``benchmarks/soak.py``) at a small scale: 2 SIGKILLs, a concurrent resume."""

from benchmarks import soak


def test_a_small_soak_loses_and_repeats_nothing_and_matches_the_uninterrupted_run(tmp_path):
    args = soak.parse(
        ["--kills", "2", "--budget", "8", "--strategy", "sobol", "--delay", "0.1", "--max-delay-s", "0.5",
         "--early-share", "0", "--no-write"]
    )  # fmt: skip
    figures = soak.run(args, tmp_path, reference_in_process=True)
    assert figures.kills == 2 and figures.concurrent == figures.refused == 1, figures
    assert figures.concurrent_evaluations == 0 and not figures.failures, figures
    assert figures.lost == 0 and figures.repeated == 0 and figures.trials == 8, figures
    assert figures.identical, figures
    text = soak.report(args, figures, "python -m benchmarks.soak --kills 2")
    assert "| lost (completed after a kill, missing or changed at the end) | 0 |" in text
