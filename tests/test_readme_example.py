"""The README's "Using NCMI in your own classifier" example runs as a doctest.

The section is taken from README.md if it has it, else from docs/ncmi.md (its source).
"""

import doctest
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Using NCMI in your own classifier"


def _section() -> str:
    for path in (ROOT / "README.md", ROOT / "docs" / "ncmi.md"):
        if path.exists():
            text = path.read_text()
            match = re.search(rf"^(#+) {re.escape(SECTION)}\s*$", text, flags=re.MULTILINE)
            if match:
                level = len(match.group(1))
                rest = text[match.end() :]
                end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
                return rest[: end.start()] if end else rest
    raise AssertionError(f"no section {SECTION!r} in README.md or docs/ncmi.md")


def test_example_runs_as_doctest():
    blocks = re.findall(r"```python\n(.*?)```", _section(), flags=re.DOTALL)
    assert blocks, "the section has no python code block"
    assert sum(line.startswith(">>>") for line in blocks[0].splitlines()) <= 10
    for i, block in enumerate(blocks):
        test = doctest.DocTestParser().get_doctest(block, {}, f"{SECTION}[{i}]", None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0, f"code block {i} of the section failed"
        assert runner.tries > 0
