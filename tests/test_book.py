"""Structure of the book: table of contents, config and stored notebook outputs."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files.extend(section["file"] for section in chapter.get("sections", []))
    return files


def resolve(entry):
    matches = [ROOT / (entry + suffix) for suffix in (".md", ".ipynb")]
    return [path for path in matches if path.exists()]


def test_toc_entries_exist():
    missing = [entry for entry in toc_files() if not resolve(entry)]
    assert missing == []


def test_every_notebook_in_toc():
    listed = {path for entry in toc_files() for path in resolve(entry)}
    orphans = [str(p.relative_to(ROOT)) for p in NOTEBOOKS if p not in listed]
    assert orphans == []


def test_config_language_is_chinese():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["sphinx"]["config"]["language"] == "zh_CN"
    assert config["only_build_toc_files"] is True
    assert config["execute"]["timeout"] > 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_executed(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    unexecuted = [i for i, cell in enumerate(code_cells) if cell.get("execution_count") is None]
    assert code_cells, "a notebook without code tests nothing"
    assert unexecuted == [], "nbval skips cells never executed; run the notebook before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_compares_some_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    compared = [
        cell for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        and cell.get("outputs")
        and "nbval-ignore-output" not in cell.get("metadata", {}).get("tags", [])
    ]
    assert len(compared) >= 3, "most outputs are ignored, so nbval would check almost nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_summary_and_exercises(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    text = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    assert "## 小结" in text
    assert "## 练习" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_have_no_errors_or_warnings(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", "".join(cell["source"])[:80]
            text = "".join(output.get("text", ""))
            assert "Warning" not in text, text[:200]
