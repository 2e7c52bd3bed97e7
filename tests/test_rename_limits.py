"""Directory renames above the writer's limit: the handlers called directly, no kernel."""

from __future__ import annotations

import errno

import pyfuse3
import pytest
from fs_harness import CTX, Fs


async def test_a_directory_over_the_rename_limit_answers_exdev_and_stays(fs: Fs) -> None:
    box = await fs.container("box")
    root = await fs.inode("box")
    await fs.ops.mkdir(root, b"d", 0o755, CTX)
    d = await fs.inode("box", "d")
    for name in ("a", "b", "c"):
        await fs.write_file(d, name, name.encode())
    fs.writer.max_dir_rename = 2
    uploads = fs.writer.statistics().uploads

    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.rename(root, b"d", root, b"e", 0, CTX)

    # mv answers EXDEV by copying the tree and deleting the original itself
    assert exc.value.errno == errno.EXDEV
    assert await fs.listing(d) == ["a", "b", "c"]
    assert fs.writer.statistics().uploads == uploads
    assert sorted(await fs.server_files(box.id)) == ["a", "b", "c"]
    fs.writer.max_dir_rename = 3
    await fs.ops.rename(root, b"d", root, b"e", 0, CTX)
    assert await fs.listing(await fs.inode("box", "e")) == ["a", "b", "c"]
