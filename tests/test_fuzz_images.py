"""The image loader's fuzz contract, fast and seeded (scripts/fuzz_images.py is the long, atheris run).

Every input to load_array(bytes, (224, 224)) decodes to a (224, 224, 3) uint8 array or raises
CaptionerError, in bounded time and memory. Checked here: the seed files of every format, files whose
headers lie about their size, every input an earlier fuzz run found (rebuilt in code), and a
deterministic batch of mutations.
"""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
import time
from pathlib import Path

import fuzz_images as fz  # scripts/fuzz_images.py, on pytest's pythonpath
import numpy as np
import pytest

#: Set to True once captioner/data/images.py turns every exception Pillow raises on a malformed file
#: into ImageError (the fix proposed with the fuzz findings). Until then the regression inputs are
#: expected failures (strict: a fix makes them pass, and this flag must then be flipped), and the
#: seeded run tolerates exactly the bugs they reproduce, but no new one.
LOADER_FIXED = True

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the corrupt files

MUTATIONS = 1500  # ~3 s on an idle core
TIGHT_MEMORY_MB = 64  # what a refused bomb or a small seed may cost


def test_every_seed_file_decodes_in_little_memory():
    seeds = fz.seed_files()
    assert {name.rsplit(".", 1)[-1] for name in seeds} >= {"jpg", "png", "gif", "webp", "bmp", "tif"}
    outcomes = {name: fz.check(data, time_limit=10, memory_limit_mb=TIGHT_MEMORY_MB) for name, data in seeds.items()}
    assert set(outcomes.values()) == {"decoded"}, outcomes


def _check_in_a_fresh_process(name: str) -> str:
    """fz.check of one crafted file in a new interpreter, whose heap no earlier test has shaped.

    A truncated 9000x9000 file is refused with its rows allocated but never written; how much of
    that allocation becomes resident depends on what the process freed before (a reused heap block
    is zeroed page by page, a fresh mapping is not). Run in the suite's long-lived process, it
    measured 182 MB; the loader's own cost is what a fresh process shows.
    """
    script = (f"import fuzz_images as fz\n"
              f"print(fz.check(fz.crafted_files()[{name!r}], time_limit=10, memory_limit_mb={TIGHT_MEMORY_MB}))")
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(scripts), *sys.path])})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("name", sorted(fz.crafted_files()))
def test_headers_that_lie_about_the_size_are_refused_before_decoding(name):
    start = time.perf_counter()
    outcome = _check_in_a_fresh_process(name)
    if name.startswith(("claims-", "small-screen-huge-frame")) and "page2" not in name:
        assert outcome == "too-large", f"{name}: {outcome}"
    elif name.startswith("truncated-"):
        assert outcome == "corrupt", f"{name}: {outcome}"  # under the limit: allocated lazily, fails on the data
    else:  # only the first page is decoded: a huge second page or an IFD loop do not matter
        assert outcome in ("decoded", "corrupt", "not-an-image"), f"{name}: {outcome}"
    assert time.perf_counter() - start < 60  # the check's own limit is 10 s; this adds the interpreter's start


def test_a_huge_claim_is_refused_with_a_message_naming_the_limit():
    from captioner.data.images import MAX_PIXELS, load_array
    from captioner.errors import ImageError

    for data in (fz.png_claiming(100_000, 100_000), fz.tiff_claiming(100_000, 100_000)):
        with pytest.raises(ImageError, match=rf"too large to decode safely.*the limit is {MAX_PIXELS:,} pixels"):
            load_array(data, (224, 224))


@pytest.mark.parametrize("name", sorted(fz.REGRESSIONS))
@pytest.mark.xfail(not LOADER_FIXED, raises=fz.Finding, strict=True,
                   reason="Pillow exception escapes load_array; see LOADER_FIXED")
def test_inputs_earlier_fuzz_runs_found(name):
    build, what = fz.REGRESSIONS[name]
    try:
        fz.check(build(), time_limit=10, memory_limit_mb=TIGHT_MEMORY_MB)
    except fz.Finding as finding:
        raise fz.Finding(finding.kind, f"{name}: {what}\n{finding.detail}") from None


def known_signatures() -> set[str]:
    """The findings the regression inputs reproduce today (empty once the loader is fixed)."""
    found = set()
    for build, _ in fz.REGRESSIONS.values():
        try:
            fz.check(build())
        except fz.Finding as finding:
            found.add(fz.signature(finding))
    return found


def test_seeded_mutations_keep_the_contract():
    faulthandler.dump_traceback_later(300, exit=True)  # a hang in C code must not stall CI forever
    try:
        report = fz.run_random(MUTATIONS, seed=0, time_limit=10, log=lambda message: None)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert report.inputs == MUTATIONS + len(fz.fixed_inputs())
    assert report.outcomes["decoded"] > 100 and report.outcomes["too-large"] > 10  # the mutations reach both ends
    allowed = set() if LOADER_FIXED else known_signatures()
    new = {key: finding.detail for key, (finding, _) in report.findings.items() if key not in allowed}
    assert not new, "\n\n".join(f"{key}\n{detail}" for key, detail in new.items())


def test_mutations_are_deterministic_for_a_seed():
    import random

    pool = list(fz.seed_files().values())
    runs = [[fz.mutate(pool[i % len(pool)], rng, pool) for i in range(50)]
            for rng in (random.Random(7), random.Random(7))]
    assert runs[0] == runs[1]
    assert fz.fix_png_crcs(fz.png_claiming(3, 3)) == fz.png_claiming(3, 3)  # CRCs were right already


def test_the_harness_reports_each_kind_of_broken_contract(monkeypatch):
    def raises(data, size):
        raise KeyError(256)

    monkeypatch.setattr(fz, "load_array", raises)
    with pytest.raises(fz.Finding) as info:
        fz.check(b"x")
    assert info.value.kind == "exception" and "KeyError" in fz.signature(info.value)

    monkeypatch.setattr(fz, "load_array", lambda data, size: np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(fz.Finding, match="bad-array"):
        fz.check(b"x")

    def hangs(data, size):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(fz, "load_array", hangs)
    with pytest.raises(fz.Finding, match="timeout"):
        fz.check(b"x", time_limit=0.2)

    def hogs(data, size):
        block = np.ones(200 * 2**20, np.uint8)  # 200 MB, touched
        return np.zeros((224, 224, 3), np.uint8) + block[:1]

    monkeypatch.setattr(fz, "load_array", hogs)
    with pytest.raises(fz.Finding, match="memory"):
        fz.check(b"x", memory_limit_mb=100)
