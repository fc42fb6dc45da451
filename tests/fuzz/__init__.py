"""The fuzz campaign over every surface a user feeds the toolkit (issue 33), in one place for the CI
tests (tests/test_fuzz.py, tests/test_fuzz_cli.py) and the long runs (scripts/fuzz.py).

- harness.py: the judge. Each case runs in-process against a real entry point under a time limit;
  a user's mistake must come back as the toolkit's (or the sweeper's) refusal, one paragraph naming
  the bad value or file; anything else escaping, a hang, a changed input file or an accepted input
  handled wrongly is a failure.
- world.py: what every case starts from (a tiny IDX data set, a trained tiny run, a small search),
  made once per campaign.
- surfaces.py and the modules it lists: per surface, its targets. A target replays one input given
  as bytes (a file's contents, or a JSON document for structured cases), so that a failing example
  is a file: the campaign saves it, and regressions/<target>/ keeps the ones that found a bug.
"""
