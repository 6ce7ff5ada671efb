"""The documentation's examples run as a reader would paste them, in page order, against one real ./serve
serving what the docs say their answers come from: ViT-B-32 with seed-0 random weights
(`local_test/make_model.sh ViT-B-32`), `MODEL_DIR=model PRECISION=fp32 ./serve`, started in a folder that
looks like the repository. The markers are described in tests/docs_examples.py."""
from __future__ import annotations

import os

import pytest

from docs_examples import KINDS, PAGES, REPO, Shell, blocks, mismatch, syntax_error

ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUN_PAGES = sorted({block.page for block in ALL_BLOCKS if block.kind == "run"})


def test_every_bash_block_in_the_docs_is_marked_to_run_or_to_check():
    unmarked = [b.where for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell") and b.kind is None]
    assert not unmarked, f"mark these with <!-- example -->, <!-- example: output --> or <!-- example: syntax -->: {unmarked}"
    unknown = [f"{b.where} ({b.kind})" for b in ALL_BLOCKS if b.kind not in (None, *KINDS)]
    assert not unknown


def test_every_example_is_valid_bash_or_python():
    errors = {b.where: syntax_error(b) for b in ALL_BLOCKS if b.kind in ("run", "syntax")}
    assert not {where: error for where, error in errors.items() if error}


def test_every_shown_output_follows_an_example_that_runs():
    for page in PAGES:
        previous = None
        for block in blocks(page):
            if block.kind == "output":
                assert previous is not None and previous.kind == "run", f"{block.where}: no run block before it"
            previous = block


def test_the_output_check_takes_elisions_and_close_numbers_but_not_other_values():
    shown = '{"dim": 512, "v": [0.04733744, -0.0158, ...], "duration": ...}'
    assert mismatch(shown, '{"dim":512,"v":[0.047337441,-0.01580001,0.5,0.25],"duration":0.17}') is None
    assert mismatch(shown, '{"dim":768,"v":[0.04733744,-0.0158,1],"duration":0.1}') == "768 where the docs show 512"
    assert mismatch(shown, '{"dim":512,"v":[0.0493,-0.0158,1],"duration":0.1}') == "0.0493 where the docs show 0.04733744"
    assert mismatch(shown, '{"dims":512,"v":[0.04733744,-0.0158,1],"duration":0.1}') == "the text differs"
    # `...` ends at its line: a line's elided end cannot take the next line's start.
    assert mismatch("1, 2, ...\n3, ...", "1, 2, 5\n3, 4") is None
    assert mismatch("1, 2, ...\n3, ...", "1, 2, 5\n4, 3, 4") == "the text differs"


@pytest.fixture(scope="module")
def docs_server(serve_module, tmp_path_factory):
    """./serve started in a folder with the repository's files and the docs' model in `model/`."""
    from clip_sagemaker.model_files import build_model_dir

    work = tmp_path_factory.mktemp("docs-examples")
    for entry in REPO.iterdir():
        if entry.name not in (".git", "model", "model.tar.gz"):
            (work / entry.name).symlink_to(entry)
    build_model_dir(work / "model", "ViT-B-32", seed=0)
    return work, serve_module({"MODEL_DIR": "model", "PRECISION": "fp32"}, cwd=work, timeout=180)


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_the_docs_examples_run_and_print_what_the_docs_show(docs_server, page):
    work, server = docs_server
    shell = Shell(work, {**os.environ}, server.port)
    failures, output = [], None
    try:
        for block in blocks(page):
            if block.kind == "run":
                output = shell.run(block.code)
                if "EXAMPLE FAILED" in output:
                    failures.append(f"{block.where} failed:\n{output}")
            elif block.kind == "output":
                problem = mismatch(block.code, output)
                if problem:
                    failures.append(f"{block.where}: {problem}; the example printed:\n{output}")
    finally:
        shell.close()
    assert not failures, "\n\n".join(failures)
