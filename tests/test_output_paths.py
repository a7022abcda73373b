"""Outputs versus inputs, as properties: whatever files and folders a user names, an output the tool accepts never
overwrites an input and is never read back as one by a rerun (leukemia_mtl.data.files.check_output)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from leukemia_mtl.data.files import check_output, mark_output
from leukemia_mtl.errors import OutputError
from leukemia_mtl.predict import image_paths

NAMES = st.sampled_from(["a", "b", "predictions"])
FILES = st.sampled_from(["x.png", "y.jpg", "z.csv"])
# a small tree: files at up to two folders' depth
TREES = st.lists(st.tuples(st.lists(NAMES, max_size=2), FILES), min_size=1, max_size=5)
SPOTS = st.tuples(st.lists(NAMES, max_size=3), st.one_of(st.none(), FILES))


def _build(root: Path, tree) -> list[Path]:
    made = []
    for folders, name in tree:
        path = root.joinpath(*folders, name)
        if any(parent.is_file() for parent in path.parents) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(path.as_posix().encode())
        made.append(path)
    return made


def _contents(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@settings(max_examples=150, deadline=None)
@given(tree=TREES, picks=st.lists(SPOTS, min_size=1, max_size=3), spot=SPOTS, as_file=st.booleans())
def test_an_accepted_output_never_overwrites_an_input_nor_is_read_back(tree, picks, spot, as_file):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _build(root, tree)
        inputs = [root.joinpath(*folders, *([name] if name else [])) for folders, name in picks]
        inputs = [p for p in inputs if p.exists()] or [root]
        output = root.joinpath(*spot[0], *([spot[1]] if spot[1] else []))
        before = _contents(root)
        try:
            if as_file:
                check_output("--csv", output, inputs)
            else:
                check_output("--overlays", output, inputs, kind="folder", marks=True, inside_inputs=True)
        except OutputError:
            assert _contents(root) == before  # a refusal writes nothing
            return
        if as_file:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text("image,verdict\n")
            written = output
        else:
            mark_output(output)
            written = output / "x_overlay.png"
            written.write_bytes(b"overlay")
        after = _contents(root)
        assert all(after[path] == data for path, data in before.items() if path != written), "an input was overwritten"
        assert written not in before or not as_file or written.suffix not in (".png", ".jpg")
        read = [str(path) for path, _ in image_paths([str(p) for p in inputs]) if path is not None]
        problems = [problem for path, problem in image_paths([str(p) for p in inputs]) if path is None]
        assert str(written) not in read and not any(str(written) in problem for problem in problems), "read back"
